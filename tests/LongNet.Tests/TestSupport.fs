/// Helpers shared by the test files: temporary folders that delete themselves, console capture for
/// running CLI commands in-process, and a tiny `longnet train` run for the model and passkey commands.
module LongNet.Tests.TestSupport

open System
open System.IO
open Xunit

/// A fresh folder under the system temp folder (named `longnet-<purpose>-<guid>`), removed on dispose.
type TempDir(purpose: string) =
    let path = Path.Combine(Path.GetTempPath(), $"longnet-{purpose}-{Guid.NewGuid():N}")
    do Directory.CreateDirectory path |> ignore

    /// The folder's full path.
    member _.Path = path

    /// The path of `name` inside the folder.
    member _.File(name: string) = Path.Combine(path, name)

    interface IDisposable with
        member _.Dispose() =
            try
                Directory.Delete(path, true)
            with _ ->
                ()

let private consoleLock = obj ()

/// Runs `body` with stdout and stderr captured: (its exit code, stdout, stderr). One capture at a time.
let captureConsole (body: unit -> int) : int * string * string =
    lock consoleLock (fun () ->
        use out = new StringWriter()
        use err = new StringWriter()
        let oldOut, oldErr = Console.Out, Console.Error
        Console.SetOut out
        Console.SetError err

        try
            let code = body ()
            code, out.ToString(), err.ToString()
        finally
            Console.SetOut oldOut
            Console.SetError oldErr)

/// Runs one command's entry function (e.g. `Train.run`) on `args` with the console captured.
let capture (run: string list -> int) (args: string list) : int * string * string = captureConsole (fun () -> run args)

/// Runs `longnet args…` in-process through the CLI's entry point: (exit code, stdout, stderr).
let longnet (args: string list) : int * string * string =
    captureConsole (fun () -> LongNet.Cli.Program.main (Array.ofList args))

/// Asserts that stderr holds exactly one line, starting with "error: ".
let assertOneErrorLine (stderr: string) : unit =
    Assert.Equal(1, stderr.Trim().Split('\n').Length)
    Assert.StartsWith("error: ", stderr)

/// Writes a small corpus (`text` repeated 30 times, one per line) as `corpus.txt` in `dir`; returns its path.
let writeCorpus (dir: TempDir) (text: string) : string =
    let corpus = dir.File "corpus.txt"
    File.WriteAllText(corpus, String.replicate 30 (text + "\n"))
    corpus

/// The `longnet train` arguments of a tiny run: preset tiny, sequence length 32, `steps` steps.
let tinyTrainArgs (corpus: string) (outDir: string) (steps: int) : string list =
    [
        "--corpus"
        corpus
        "--preset"
        "tiny"
        "--out"
        outDir
        "--steps"
        string steps
        "--seq-len"
        "32"
    ]

/// Trains a tiny run on `text` into `dir`/run for `steps` steps, asserting success; returns the
/// corpus path and the checkpoint path.
let trainTiny (dir: TempDir) (text: string) (steps: int) : string * string =
    let corpus = writeCorpus dir text
    let outDir = dir.File "run"

    let code, _, stderr =
        capture LongNet.Cli.Train.run (tinyTrainArgs corpus outDir steps)

    Assert.True((code = 0), stderr)
    corpus, Path.Combine(outDir, "checkpoint.ckpt")

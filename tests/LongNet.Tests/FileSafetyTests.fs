/// Crash-safe files: a `longnet train` child process killed (SIGKILL) between finishing the new
/// checkpoint's temporary file and renaming it leaves the previous checkpoint loadable; damaged `.npy`
/// files and checkpoints — cut at any byte or with any byte flipped — give an error naming the file.
[<Xunit.Collection("serial")>]
module LongNet.Tests.FileSafetyTests

open System
open System.Diagnostics
open System.IO
open System.Threading.Tasks
open Xunit
open FsCheck
open FsCheck.FSharp
open TorchSharp
open LongNet
open LongNet.Training
open LongNet.Tests.TestSupport

let private corpusText =
    "The river ran past the mill and under the old stone bridge."

/// Starts `dotnet LongNet.Cli.dll args…` with one extra environment variable; stderr is redirected.
let private startCli (args: string list) (variable: string, value: string) =
    let cli = Path.Combine(AppContext.BaseDirectory, "LongNet.Cli.dll")

    let host =
        match Environment.GetEnvironmentVariable "DOTNET_HOST_PATH" with
        | null
        | "" -> "dotnet"
        | path -> path

    let info =
        ProcessStartInfo(host, RedirectStandardError = true, RedirectStandardOutput = true)

    info.ArgumentList.Add cli

    for a in args do
        info.ArgumentList.Add a

    info.Environment.[variable] <- value
    Process.Start info

/// Reads `child`'s stderr until a line contains `marker` (true) or the stream ends or time runs out;
/// also returns the lines read.
let private waitForLine (child: Process) (marker: string) (timeout: TimeSpan) =
    let lines = Collections.Concurrent.ConcurrentQueue<string>()

    let reading =
        Task.Run(fun () ->
            let mutable found = false
            let mutable line = child.StandardError.ReadLine()

            while not found && not (isNull line) do
                lines.Enqueue line
                found <- line.Contains marker

                if not found then
                    line <- child.StandardError.ReadLine()

            found)

    (reading.Wait timeout && reading.Result), String.Join("\n", lines)

let private stepOf (path: string) =
    match Checkpoint.load path with
    | Ok loaded ->
        for KeyValue(_, t) in loaded.Tensors do
            t.Dispose()

        loaded.Header.Step
    | Error e -> failwith e

[<Fact>]
let ``a train process killed in the middle of saving leaves the previous checkpoint loadable`` () =
    use dir = new TempDir("crash")
    let corpus, checkpoint = trainTiny dir corpusText 2
    let before = File.ReadAllBytes checkpoint
    Assert.Equal(2, stepOf checkpoint)

    use child =
        startCli
            [
                "train"
                "--corpus"
                corpus
                "--out"
                Path.GetDirectoryName checkpoint
                "--resume"
                "--steps"
                "4"
            ]
            (AtomicFile.PauseVariable, "checkpoint.ckpt")

    child.StandardOutput.ReadToEndAsync() |> ignore

    let paused, stderr =
        waitForLine child "pausing before renaming" (TimeSpan.FromMinutes 3.0)

    child.Kill true // SIGKILL: no finally blocks, no flushing, no clean-up
    child.WaitForExit()
    Assert.True(paused, $"the child never reached the rename of its new checkpoint; its stderr:\n{stderr}")
    Assert.NotEqual(0, child.ExitCode)

    // The previous checkpoint is untouched and loads; the finished but unrenamed temporary file is left
    // behind and holds the newer state, which shows the kill fell between writing and renaming.
    Assert.Equal<byte[]>(before, File.ReadAllBytes checkpoint)
    Assert.Equal(2, stepOf checkpoint)

    let leftovers =
        Directory.GetFiles(Path.GetDirectoryName checkpoint, ".checkpoint.ckpt.*.tmp")

    Assert.Equal(1, leftovers.Length)
    Assert.Equal(4, stepOf leftovers.[0])

/// A damage to a file: cut it to a length, or flip one bit of one byte.
type Damage =
    | Cut of fraction: float
    | Flip of fraction: float * bit: int

let private damages =
    let fraction = Gen.choose (0, 1_000_000) |> Gen.map (fun i -> float i / 1_000_001.0)

    Gen.oneof
        [
            fraction |> Gen.map Cut
            Gen.map2 (fun f b -> Flip(f, b)) fraction (Gen.choose (0, 7))
        ]
    |> Arb.fromGen

let private damage (bytes: byte[]) (d: Damage) =
    match d with
    | Cut f -> bytes.[.. int (f * float bytes.Length) - 1]
    | Flip(f, bit) ->
        let copy = Array.copy bytes
        let i = int (f * float bytes.Length)
        copy.[i] <- copy.[i] ^^^ (1uy <<< bit)
        copy

/// Checks `property` on `count` random damages, throwing with the counterexample on failure.
let private checkDamages (count: int) (property: Damage -> bool) =
    Check.One(Config.QuickThrowOnFailure.WithMaxTest count, Prop.forAll damages property)

[<Fact>]
let ``a cut or bit-flipped checkpoint is refused with an error naming the file`` () =
    use dir = new TempDir("damaged")
    let _, checkpoint = trainTiny dir corpusText 1
    let bytes = File.ReadAllBytes checkpoint
    let path = dir.File "damaged.ckpt"

    checkDamages 60 (fun d ->
        File.WriteAllBytes(path, damage bytes d)

        match Checkpoint.load path with
        | Ok _ -> false
        | Error e -> e.Contains path && e.Contains "damaged")

[<Fact>]
let ``a cut or bit-flipped npy file is read as an error naming the file, or as an array of its shape`` () =
    Native.ensureLoaded () |> ignore
    use dir = new TempDir("damaged-npy")
    let path = dir.File "x.npy"
    use original = torch.randn ([| 2L; 7L; 3L; 5L |], dtype = torch.float64)
    Npy.writeTensor path original
    let bytes = File.ReadAllBytes path

    checkDamages 200 (fun d ->
        File.WriteAllBytes(path, damage bytes d)

        try
            // A flip inside the data is not detectable (npy has no checksum): the shape must survive.
            use t = Npy.readTensor path

            (match d with
             | Flip _ -> true
             | Cut _ -> false)
            && t.shape = original.shape
        with :? InvalidDataException as e ->
            e.Message.Contains path)

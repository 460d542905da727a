/// Crash-safe file writes: the content goes to a temporary file in the target's folder, is flushed to
/// disk, and is then renamed over the target, so a reader sees either the old file or the complete new
/// one — never a partial file — even when the process is killed mid-write. Used for every file the
/// project writes (npy, checkpoints, logs, JSON reports, plots, the patched native library).
module LongNet.AtomicFile

open System
open System.IO
open System.Threading

/// Test hook: when this environment variable holds a file name (e.g. `checkpoint.ckpt`), every atomic
/// write of a file of that name pauses for two minutes after its temporary file is complete and before
/// the rename, announced on stderr, so that a test can kill the process inside that window. Unset in
/// normal use.
[<Literal>]
let PauseVariable = "LONGNET_TEST_PAUSE_BEFORE_RENAME_OF"

let private pauseBeforeRename (target: string) =
    match Environment.GetEnvironmentVariable PauseVariable with
    | null
    | "" -> ()
    | name when name = Path.GetFileName target ->
        eprintfn "atomic write: temporary file complete, pausing before renaming it to '%s'" target
        Console.Error.Flush()
        Thread.Sleep(TimeSpan.FromMinutes 2.0)
    | _ -> ()

/// The temporary file name used while writing `fullPath`: hidden, in the same folder, unique per call.
let temporaryPathFor (fullPath: string) : string =
    let folder = Path.GetDirectoryName fullPath

    Path.Combine(folder, $".{Path.GetFileName fullPath}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp")

/// Writes `path` atomically with `produce`, which must create and fill the temporary file whose path it
/// is given. The parent folder must exist. On failure the temporary file is removed, an existing `path`
/// is left as it was, and I/O errors are re-raised as an IOException naming `path`.
let writeVia (path: string) (produce: string -> unit) : unit =
    if String.IsNullOrWhiteSpace path then
        invalidArg "path" "path must name a file, got an empty string."

    let full = Path.GetFullPath path

    if Directory.Exists full then
        raise (IOException $"Cannot write '{path}': a directory of that name exists.")

    if not (Directory.Exists(Path.GetDirectoryName full)) then
        raise (IOException $"Cannot write '{path}': its folder '{Path.GetDirectoryName full}' does not exist.")

    let temp = temporaryPathFor full

    try
        try
            produce temp

            // Flush the finished temporary file to disk before it replaces the target.
            do
                use stream =
                    new FileStream(temp, FileMode.Open, FileAccess.ReadWrite, FileShare.None)

                stream.Flush true

            pauseBeforeRename full
            File.Move(temp, full, true)
        with
        | :? IOException
        | :? UnauthorizedAccessException as e -> raise (IOException($"Cannot write '{path}': {e.Message}", e))
    finally
        try
            if File.Exists temp then
                File.Delete temp
        with _ ->
            ()

/// Writes `path` atomically with `fill`, which writes the content to a stream (see `writeVia`).
let write (path: string) (fill: Stream -> unit) : unit =
    writeVia path (fun temp ->
        use stream =
            new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 <<< 20)

        fill stream)

/// Writes `bytes` to `path` atomically (see `writeVia`).
let writeBytes (path: string) (bytes: byte[]) : unit =
    write path (fun stream -> stream.Write(bytes, 0, bytes.Length))

/// Writes `text` to `path` atomically as UTF-8 without a byte-order mark (see `writeVia`).
let writeText (path: string) (text: string) : unit =
    writeBytes path (Text.UTF8Encoding(false).GetBytes text)

/// Creates the folder that will hold `path` if it is missing (for outputs the user names freely).
let ensureFolderOf (path: string) : unit =
    Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath path))
    |> ignore

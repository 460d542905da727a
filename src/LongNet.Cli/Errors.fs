/// How the model commands fail: a one-line message on stderr and an exit code — 2 for a bad command
/// line, 1 for anything else (missing corpus, damaged checkpoint, NaN loss …). Never a stack trace.
module LongNet.Cli.Errors

open System
open System.Runtime.InteropServices
open System.Text.RegularExpressions

/// A failure of a command that is not a usage error; the message says the cause and what to do.
exception CommandError of string

/// Raises `CommandError` with `message`.
let fail (message: string) : 'T = raise (CommandError message)

/// The value of a result, or `CommandError` with its message.
let orFail (result: Result<'T, string>) : 'T =
    match result with
    | Ok v -> v
    | Error e -> fail e

/// The first line of an exception's message (native errors carry long C++ traces after it).
let firstLine (e: exn) : string =
    let text = if isNull e.Message then e.GetType().Name else e.Message

    text.Split([| '\n'; '\r' |], StringSplitOptions.RemoveEmptyEntries)
    |> Array.tryHead
    |> Option.defaultValue (e.GetType().Name)

let private parameterMark = Regex("`([a-z][A-Za-z0-9]*)`", RegexOptions.Compiled)

/// A library message with its marked parameter names written as this CLI's options: `maxNewTokens` →
/// --max-new-tokens (the library names parameters, never flags).
let asOptions (message: string) : string =
    parameterMark.Replace(
        message,
        fun m ->
            let name = m.Groups.[1].Value
            "--" + Regex.Replace(name, "([A-Z])", fun c -> "-" + c.Value.ToLowerInvariant())
    )

/// Runs a command body and turns every failure into one line on stderr and an exit code.
let guard (command: string) (body: unit -> int) : int =
    try
        body ()
    with
    | Args.UsageError message ->
        eprintfn "error: %s (see `longnet %s --help`)" (asOptions message) command
        2
    | CommandError message ->
        eprintfn "error: %s" (asOptions message)
        1
    | :? OutOfMemoryException ->
        eprintfn "error: out of memory; use a smaller model, batch or sequence length."
        1
    | :? ExternalException as e ->
        eprintfn "error: native failure in libtorch: %s" (firstLine e)
        1
    | e ->
        eprintfn "error: %s" (firstLine e)
        1

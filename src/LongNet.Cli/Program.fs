/// The `longnet` command: a table of commands, each a `string list -> int` with its help text.
module LongNet.Cli.Program

open System

/// The commands: name, one-line description, help text and entry point.
let commands: (string * string * string * (string list -> int)) list =
    [
        "train", "train a LongNet language model on a corpus", Train.help, Train.run
        "eval", "perplexity of a checkpoint at several sequence lengths", Evaluate.help, Evaluate.run
        "generate", "continue a prompt with a checkpoint (KV-cache decoding)", Generate.help, Generate.run
        "demo", "the main job: train, evaluate and sample a small LongNet in minutes", ModelDemo.help, ModelDemo.run
    ]

let private usage () =
    let lines =
        commands
        |> List.map (fun (name, description, _, _) -> $"  {name, -10}{description}")
        |> String.concat "\n"

    $"usage: longnet <command> [options]   (longnet <command> --help for its options)\n\ncommands:\n{lines}"

[<EntryPoint>]
let main argv =
    match List.ofArray argv with
    | []
    | [ "--help" ]
    | [ "-h" ]
    | [ "help" ] ->
        printfn "%s" (usage ())
        0
    | name :: rest ->
        match commands |> List.tryFind (fun (n, _, _, _) -> n = name) with
        | Some(_, _, _, run) -> run rest
        | None ->
            eprintfn "error: unknown command '%s'.\n%s" name (usage ())
            2

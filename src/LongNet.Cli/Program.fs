/// The `longnet` command: dispatches to the sub-commands, maps errors to exit codes
/// (0 ok, 2 bad input, 1 failure) and prints errors on stderr as one line.
module LongNet.Cli.Program

open System
open LongNet.Cli.Args

let private commands: (string * string * (string list -> int) * string) list =
    [
        "attend",
        "dilated attention on .npy files (cross-checks against other implementations)",
        Attend.run,
        Attend.help
        "plan", "coverage, pairs, FLOPs, memory and path length of a configuration", PlanCommand.run, PlanCommand.help
        "bench",
        "time and memory of dilated vs dense attention over a grid of N (JSON, table, plots)",
        Bench.run,
        Bench.help
        "train", "train a LongNet language model on a corpus or on generated passkey samples", Train.run, Train.help
        "eval",
        "perplexity of a checkpoint: by window length, by context, by position, over 1M tokens",
        Evaluate.run,
        Evaluate.help
        "generate",
        "continue a prompt with a checkpoint (KV-cache decoding where the model has one)",
        Generate.run,
        Generate.help
        "logits",
        "run a LongNet checkpoint or a Hugging Face Llama/Mistral folder on token ids (.npy in, .npy out)",
        Pretrained.runLogits,
        Pretrained.logitsHelp
        "import",
        "turn a Hugging Face Llama/Mistral folder into a LongNet checkpoint (weights and tokenizer)",
        Pretrained.runImport,
        Pretrained.importHelp
        "export",
        "write a Llama-layout model as a Hugging Face folder (config.json + model.safetensors)",
        Pretrained.runExport,
        Pretrained.exportHelp
        "demo",
        "the main job: train a LongNet at 8192 tokens and measure how it uses long context",
        ModelDemo.run,
        ModelDemo.help
        "context-study",
        "LongNet against local-only and dense attention at the same training budget",
        ContextStudyCommand.run,
        ContextStudyCommand.help
        "passkey", "passkey retrieval over prompt lengths × depths (table, JSON, heatmap)", Passkey.run, Passkey.help
        "passkey-study",
        "the CASM experiment: train, CRD-NTK fine-tune and passkey-evaluate tiny models (docs/passkey)",
        PasskeyStudy.run,
        PasskeyStudy.help
        "attention-demo", "dilated attention against dense attention, its plan and speed", Demo.run, Demo.help
    ]

let private usage () =
    let lines =
        commands
        |> List.map (fun (name, what, _, _) -> $"  {name, -16}{what}")
        |> String.concat "\n"

    $"""longnet — LongNet dilated attention for .NET

usage: longnet <command> [options]      longnet <command> --help

commands:
{lines}

exit codes: 0 success, 2 bad input (message on stderr), 1 failure."""

[<EntryPoint>]
let main argv =
    let args = List.ofArray argv

    try
        match args with
        | []
        | [ "--help" ]
        | [ "-h" ]
        | [ "help" ] ->
            printfn "%s" (usage ())
            0
        | [ "--version" ] ->
            let report = LongNet.Native.ensureLoaded ()
            printfn "longnet %s" (typeof<LongNet.DilatedConfig>.Assembly.GetName().Version.ToString 3)
            printfn "libtorch: %s" (defaultArg report.TorchLib "(TorchSharp's own search)")

            printfn
                "bridge:   %s%s"
                (defaultArg report.LibTorchSharp "(TorchSharp's own search)")
                (if report.Patched then " (GLIBCXX-weakened copy)" else "")

            0
        | command :: rest ->
            match commands |> List.tryFind (fun (name, _, _, _) -> name = command) with
            | None ->
                eprintfn
                    "error: unknown command '%s'. Commands: %s."
                    command
                    (commands |> List.map (fun (n, _, _, _) -> n) |> String.concat ", ")

                2
            | Some(_, _, _, help) when List.contains "--help" rest || List.contains "-h" rest ->
                printfn "%s" help
                0
            | Some(_, _, run, _) -> run rest
    with
    | UsageError message ->
        eprintfn "error: %s" message
        2
    | :? ArgumentException as e ->
        eprintfn "error: %s" e.Message
        2
    | e ->
        eprintfn "failed: %s" (e.GetBaseException().Message)
        1

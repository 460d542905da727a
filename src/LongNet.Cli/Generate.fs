/// `longnet generate`: continues a prompt with a trained model and the KV cache; prints only the
/// continuation on stdout.
module LongNet.Cli.Generate

open System
open System.IO
open LongNet.Training
open LongNet.Cli.Errors

/// Usage text.
let help =
    """longnet generate --checkpoint PATH (--prompt TEXT | --prompt-file PATH) --max-new-tokens N [--greedy | --temperature T --top-k K --top-p P] [--seed S]

Continues a prompt with a trained model (incremental decoding with the exact KV cache; models without
one — select-and-merge attention, dynamic or CRD NTK scaling — recompute the full forward per token)
and prints only the continuation on stdout.

  --checkpoint PATH   a checkpoint written by `longnet train`
  --prompt TEXT       the prompt text
  --prompt-file PATH  read the prompt from a UTF-8 file instead
  --max-new-tokens N  tokens to generate
  --greedy            always take the most likely token
  --temperature T     sampling temperature > 0 (default 0.8)
  --top-k K           keep the K most likely tokens (default 40; 0 = all)
  --top-p P           keep the smallest set of tokens with probability ≥ P (default 0.95; 1 = all)
  --seed S            seed of the sampler (default 1)

Exit codes: 0 done, 2 bad command line, 1 failure."""

let private valueOptions =
    [
        "--checkpoint"
        "--prompt"
        "--prompt-file"
        "--max-new-tokens"
        "--temperature"
        "--top-k"
        "--top-p"
        "--seed"
    ]

/// Reads the sampling options.
let sampling (p: Args.Parsed) : SamplingSettings =
    let sampled =
        [ "--temperature"; "--top-k"; "--top-p" ]
        |> List.filter (fun o -> (Args.optional p o).IsSome)

    if Args.has p "--greedy" then
        match sampled with
        | first :: _ -> raise (Args.UsageError $"--greedy and {first} exclude each other.")
        | [] -> Sampling.greedy
    else
        let d = Sampling.defaults

        {
            Greedy = false
            Temperature =
                Args.optional p "--temperature"
                |> Option.map (Args.toFloat "--temperature" true)
                |> Option.defaultValue d.Temperature
            TopK =
                Args.optional p "--top-k"
                |> Option.map (Args.toInt "--top-k" 0L 1_000_000_000L >> int)
                |> Option.defaultValue d.TopK
            TopP =
                match Args.optional p "--top-p" |> Option.map (Args.toFloat "--top-p" true) with
                | Some v when v > 1.0 -> raise (Args.UsageError $"--top-p must be in (0, 1], got {v}.")
                | Some v -> v
                | None -> d.TopP
        }

/// Runs `longnet generate`.
let run (argv: string list) : int =
    Errors.guard "generate" (fun () ->
        let p = Args.parse valueOptions [ "--greedy"; "--help" ] argv

        if Args.has p "--help" then
            printfn "%s" help
            0
        else
            let checkpoint = Args.required p "--checkpoint"

            let prompt =
                match Args.optional p "--prompt", Args.optional p "--prompt-file" with
                | Some _, Some _ -> raise (Args.UsageError "give either --prompt or --prompt-file, not both.")
                | None, None -> raise (Args.UsageError "give --prompt TEXT or --prompt-file PATH.")
                | Some text, None -> text
                | None, Some path ->
                    if not (File.Exists path) then
                        fail $"prompt file '{path}' does not exist."

                    File.ReadAllText path

            let maxNew =
                Args.required p "--max-new-tokens"
                |> Args.toInt "--max-new-tokens" 1L (int64 Int32.MaxValue)
                |> int

            let settings =
                {
                    MaxNewTokens = maxNew
                    Sampling = sampling p
                    StopAtEndOfText = true
                }

            let seed =
                Args.optional p "--seed"
                |> Option.map (Args.toInt "--seed" 0L Int64.MaxValue)
                |> Option.defaultValue 1L

            let model, tokenizer, _ = Loading.loadModel checkpoint
            use model = model

            let ids =
                LongNet.Training.Generate.tokens
                    model
                    (tokenizer.Encode prompt)
                    settings
                    tokenizer.EndOfText
                    (Rng.Create seed)
                    ignore
                |> orFail

            let stdout = Console.OpenStandardOutput()
            let bytes = Text.Encoding.UTF8.GetBytes(tokenizer.Decode ids)
            stdout.Write(bytes, 0, bytes.Length)
            stdout.Flush()
            0)

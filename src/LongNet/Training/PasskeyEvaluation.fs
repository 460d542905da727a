/// Passkey retrieval of a trained model over a grid of prompt lengths × depths (the CASM paper's evaluation):
/// per cell, prompts with a random 5-digit pass key hidden at that depth; the model continues greedily
/// and a trial counts when the generated digits equal the pass key exactly.
namespace LongNet.Training

open System
open TorchSharp
open LongNet.Modules
open LongNet.Text

/// One cell of a passkey grid.
type PasskeyCell =
    {
        /// Prompt length in tokens.
        Length: int
        /// Depth of the pass key in [0, 1].
        Depth: float
        /// Trials whose generated digits matched.
        Correct: int
        /// Trials run.
        Trials: int
    }

/// Evaluating passkey retrieval.
module PasskeyEvaluation =
    /// The default depths: 0, 0.25, 0.5, 0.75, 1.
    let defaultDepths = [ 0.0; 0.25; 0.5; 0.75; 1.0 ]

    /// Tokens generated per trial (a 5-digit key and its leading space fit).
    let generatedTokens = 8

    /// The share of a cell's trials that matched.
    let accuracy (cell: PasskeyCell) : float = float cell.Correct / float cell.Trials

    /// Positions the feed-forward networks of a long passkey forward run at a time.
    let private forwardChunk = 65_536

    /// `verdictOfChoices` with the choices asked for one at a time, `choiceAt i` (i = 0 … answer.Length),
    /// as long as decoding follows the answer.
    let verdictAlong (tokenizer: ITokenizer) (answer: int[]) (choiceAt: int -> int) (key: string) : bool option =
        // decoding follows the answer while the choices match it; where one differs, it has written
        // answer.[..i−1] and then that choice
        let rec walk i =
            let choice = choiceAt i

            if i < answer.Length && choice = answer.[i] then
                walk (i + 1)
            elif Some choice = tokenizer.EndOfText then
                Some(Passkey.score key (tokenizer.Decode answer.[.. i - 1]))
            else
                let text =
                    (tokenizer.Decode(Array.append answer.[.. i - 1] [| choice |])).TrimStart()

                let digits = Passkey.extractDigits text

                if text.Length > digits.Length then Some(digits = key) // the run of digits has ended
                elif key.StartsWith digits then None
                else Some false

        walk 0

    /// Whether greedy decoding spells `key`, from `choices.[i]` = the greedy token after the prompt and
    /// `answer.[..i−1]` (i = 0 … answer.Length): `Some` when that settles it, `None` when decoding left
    /// the answer's tokens in a way that may still spell the key.
    let verdictOfChoices (tokenizer: ITokenizer) (answer: int[]) (choices: int[]) (key: string) : bool option =
        if choices.Length <> answer.Length + 1 then
            invalidArg "choices" $"choices needs answer.Length + 1 = {answer.Length + 1} entries, got {choices.Length}."

        verdictAlong tokenizer answer (fun i -> choices.[i]) key

    /// Whether greedy decoding after `prompt` spells `key`, read from one forward over the prompt and the
    /// answer " key" (the greedy choice after every answer prefix): `Some` when that settles it, `None`
    /// when only generating can tell — the model took another way that may still spell the key (extra
    /// whitespace, another split of the digits into tokens), or it is an encoder. With dynamic or CRD NTK
    /// (positions that depend on the length) it runs one forward per answer token, as decoding does.
    let greedyVerdict (model: LongNetModel) (tokenizer: ITokenizer) (prompt: int[]) (key: string) : bool option =
        let answer = tokenizer.Encode $" {key}"
        let tokens = Array.append prompt answer
        let config = model.Config

        // read only for a decoder, and only when the answer fits the tokens generation may write
        if
            config.Architecture <> Decoder
            || answer.Length >= generatedTokens
            || tokens.Length > config.MaxPositions
        then
            None
        else
            let wasTraining = model.training
            model.eval ()

            // the greedy choices after the last `count` positions of tokens.[..length−1]
            let choices (length: int) (count: int) =
                use input = torch.tensor(Array.map int64 tokens.[.. length - 1]).unsqueeze 0L
                use picked = model.GreedyTail(input, count, forwardChunk)
                picked.data<int64>().ToArray() |> Array.map int

            try
                if ModelConfig.lengthDependentPositions config then
                    // dynamic or CRD NTK: every decoding step runs at its own length, so one forward per
                    // step, as generation does, stopping where the model leaves the answer
                    verdictAlong tokenizer answer (fun i -> (choices (prompt.Length + i) 1).[0]) key
                else
                    verdictOfChoices tokenizer answer (choices tokens.Length (answer.Length + 1)) key
            finally
                if wasTraining then
                    model.train ()

    /// Runs the grid: for each length, each depth, `trials` prompts whose pass keys are drawn from `rng`
    /// (one per trial) in that order; `onCell` sees each cell as it completes. Evaluating the lengths one
    /// call at a time with one shared `rng` — each on its own scaled model — scores the same prompts as
    /// one call over all lengths. Raises ArgumentOutOfRangeException naming `trials`, `depth` or
    /// `targetLength` (a length shorter than the pass-key sentence and the question); generation errors
    /// are returned.
    let evaluateFrom
        (model: LongNetModel)
        (tokenizer: ITokenizer)
        (lengths: int list)
        (depths: float list)
        (trials: int)
        (rng: Random)
        (onCell: PasskeyCell -> unit)
        : Result<PasskeyCell list, string> =
        if trials < 1 then
            raise (ArgumentOutOfRangeException("trials", box trials, $"trials must be ≥ 1, got {trials}."))

        let settings =
            {
                MaxNewTokens = generatedTokens
                Sampling = Sampling.greedy
                StopAtEndOfText = true
            }

        let trial length depth =
            let key = Passkey.randomPasskey rng
            let prompt = Passkey.build tokenizer length depth key

            match Generate.check model prompt.Tokens settings with
            | Error e -> Error e
            | Ok() ->
                match greedyVerdict model tokenizer prompt.Tokens key with
                | Some hit -> Ok hit
                | None ->
                    Generate.tokens model prompt.Tokens settings tokenizer.EndOfText (Rng.Create 0L) ignore
                    |> Result.map (fun ids -> Passkey.score key (tokenizer.Decode ids))

        let rec cells (pending: (int * float) list) (acc: PasskeyCell list) =
            match pending with
            | [] -> Ok(List.rev acc)
            | (length, depth) :: rest ->
                let rec run i correct =
                    if i = trials then
                        Ok correct
                    else
                        match trial length depth with
                        | Ok hit -> run (i + 1) (if hit then correct + 1 else correct)
                        | Error e -> Error e

                match run 0 0 with
                | Error e -> Error e
                | Ok correct ->
                    let cell =
                        {
                            Length = length
                            Depth = depth
                            Correct = correct
                            Trials = trials
                        }

                    onCell cell
                    cells rest (cell :: acc)

        cells
            [
                for l in lengths do
                    for d in depths -> l, d
            ]
            []

    /// `evaluateFrom` with pass keys from `Random(seed)`. Runs the grid: for each length, each depth, `trials` prompts whose pass keys come from
    /// `Random(seed)` in that order; `onCell` sees each cell as it completes. Raises
    /// ArgumentOutOfRangeException naming `trials`, `depth` or `targetLength` (a length shorter than the
    /// pass-key sentence and the question); generation errors are returned.
    let evaluate
        (model: LongNetModel)
        (tokenizer: ITokenizer)
        (lengths: int list)
        (depths: float list)
        (trials: int)
        (seed: int)
        (onCell: PasskeyCell -> unit)
        : Result<PasskeyCell list, string> =
        evaluateFrom model tokenizer lengths depths trials (Random(seed)) onCell

    /// The accuracy table: one row per depth, one column per length, percentages.
    let table (lengths: int list) (depths: float list) (cells: PasskeyCell list) : string =
        let header =
            "depth \\ length"
            + (lengths |> List.map (fun l -> $"{l, 10}") |> String.concat "")

        let rows =
            [
                for d in depths ->
                    let row =
                        lengths
                        |> List.map (fun l ->
                            let c = cells |> List.find (fun c -> c.Depth = d && c.Length = l)
                            $"{accuracy c, 10:P0}")
                        |> String.concat ""

                    sprintf "%-14s%s" (d.ToString(Globalization.CultureInfo.InvariantCulture)) row
            ]

        String.Join("\n", header :: rows)

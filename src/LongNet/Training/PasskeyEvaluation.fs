/// Passkey retrieval of a trained model over a grid of prompt lengths × depths (the CASM paper's evaluation):
/// per cell, prompts with a random 5-digit pass key hidden at that depth; the model continues greedily
/// and a trial counts when the generated digits equal the pass key exactly.
namespace LongNet.Training

open System
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

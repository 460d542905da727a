/// Low-rank adapters (LoRA, Hu et al. 2021) on attention projections: a projection W is used as
/// W + (α / r)·B·A with A `[r, in]` and B `[out, r]`. B starts at zero, so an adapted model starts as
/// exactly the model it adapts; fine-tuning then trains only the adapters (and the norms), and merging
/// folds (α / r)·B·A into W, so an exported model needs no adapter code.
namespace LongNet.Modules

open System
open LongNet

/// A projection of an attention layer that can carry an adapter.
type LoraTarget =
    /// The query projection (q_proj).
    | QueryProjection
    /// The key projection (k_proj).
    | KeyProjection
    /// The value projection (v_proj).
    | ValueProjection
    /// The output projection (out_proj; o_proj in Hugging Face models).
    | OutputProjection

/// Low-rank adapter settings of every attention layer.
type LoraSettings =
    {
        /// Rank r of every adapter, in [1, the projection's input width].
        Rank: int
        /// α: the low-rank update is scaled by α / r.
        Alpha: float
        /// The projections that carry adapters (distinct, at least one).
        Targets: LoraTarget list
    }

/// Names, defaults and validation of `LoraSettings`.
module Lora =
    /// Every target, in the order q, k, v, o.
    let allTargets =
        [ QueryProjection; KeyProjection; ValueProjection; OutputProjection ]

    /// The short name of a target: "q", "k", "v" or "o".
    let targetName (t: LoraTarget) : string =
        match t with
        | QueryProjection -> "q"
        | KeyProjection -> "k"
        | ValueProjection -> "v"
        | OutputProjection -> "o"

    /// The target named "q", "k", "v" or "o" (case and surrounding spaces ignored).
    let tryParseTarget (name: string) : LoraTarget option =
        let n = name.Trim().ToLowerInvariant()
        allTargets |> List.tryFind (fun t -> targetName t = n)

    /// Rank 8, α = 16, adapters on the query and value projections (the LoRA paper's choice).
    let defaults: LoraSettings =
        {
            Rank = 8
            Alpha = 16.0
            Targets = [ QueryProjection; ValueProjection ]
        }

    /// The factor of the low-rank update, α / r.
    let scaling (s: LoraSettings) : float = s.Alpha / float s.Rank

    /// The name of an adapter factor's parameter in an attention layer: "q_lora_a", "q_lora_b", ….
    let parameterName (target: LoraTarget) (factor: char) : string = $"{targetName target}_lora_{factor}"

    /// Whether a model parameter's name is an adapter factor's.
    let isAdapterParameter (name: string) : bool =
        allTargets
        |> List.exists (fun t ->
            name.EndsWith(parameterName t 'a', StringComparison.Ordinal)
            || name.EndsWith(parameterName t 'b', StringComparison.Ordinal))

    /// Checks the settings for attention of width `embed`; the error names the field ("lora.rank", …).
    let validate (embed: int) (s: LoraSettings) : Result<LoraSettings, ConfigError> =
        let error p m = Error { Parameter = p; Message = m }

        if s.Rank < 1 || s.Rank > embed then
            error "lora.rank" $"lora.rank must be in [1, embedDim = {embed}], got {s.Rank}."
        elif not (Double.IsFinite s.Alpha && s.Alpha > 0.0) then
            error "lora.alpha" $"lora.alpha must be a finite number > 0, got {s.Alpha}."
        elif s.Targets.IsEmpty then
            error "lora.targets" "lora.targets must name at least one of q, k, v, o."
        elif List.distinct s.Targets |> List.length <> s.Targets.Length then
            let names = String.Join(", ", s.Targets |> List.map targetName)
            error "lora.targets" $"lora.targets must not repeat a projection, got {names}."
        else
            Ok s

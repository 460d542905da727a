/// The position-wise feed-forward network of a Transformer block: SwiGLU or GELU, optional sub-LN.
/// Notation: b batch, n positions, e embedding width, f hidden width.
namespace LongNet.Modules

open TorchSharp
open TorchSharp.Modules
open type TorchSharp.torch.nn

/// Which feed-forward network a block uses.
type FeedForwardKind =
    /// w₂(SiLU(w₁x) ⊙ w₃x) (Shazeer 2020, LLaMA): three projections.
    | SwiGlu
    /// fc₂(GELU(fc₁x)) (GPT-2, torchscale): two projections.
    | Gelu

/// Functions over `FeedForwardKind`.
module FeedForwardKind =
    /// The name used in config files: "swiglu" or "gelu".
    let name (kind: FeedForwardKind) : string =
        match kind with
        | SwiGlu -> "swiglu"
        | Gelu -> "gelu"

    /// Parses "swiglu" or "gelu" (case-insensitive).
    let tryParse (text: string) : FeedForwardKind option =
        match text.Trim().ToLowerInvariant() with
        | "swiglu" -> Some SwiGlu
        | "gelu" -> Some Gelu
        | _ -> None

/// The feed-forward network `[b, n, e]` → `[b, n, e]`. With `subLayerNorm` (Magneto), a LayerNorm over
/// the hidden width runs before the output projection. Dropout is applied by the enclosing block.
[<Sealed>]
type FeedForward
    (name: string, embed: int, hidden: int, kind: FeedForwardKind, subLayerNorm: bool, bias: bool, eps: float) as this =
    inherit Module<torch.Tensor, torch.Tensor>(name)

    let input = Linear(int64 embed, int64 hidden, hasBias = bias)
    let output = Linear(int64 hidden, int64 embed, hasBias = bias)

    let gate =
        match kind with
        | SwiGlu -> Some(Linear(int64 embed, int64 hidden, hasBias = bias))
        | Gelu -> None

    let norm =
        if subLayerNorm then
            Some(LayerNorm([| int64 hidden |], eps))
        else
            None

    do
        this.register_module ("input", input)
        this.register_module ("output", output)
        gate |> Option.iter (fun g -> this.register_module ("gate", g))
        norm |> Option.iter (fun m -> this.register_module ("subln", m))

    /// The input projection(s) e → f (SwiGLU: value and gate), for initialisation.
    member _.InputProjections: Linear list = input :: Option.toList gate

    /// The output projection f → e, for initialisation.
    member _.OutputProjection: Linear = output

    /// `[b, n, e]` → `[b, n, e]`.
    override _.forward(x: torch.Tensor) : torch.Tensor =
        use scope = torch.NewDisposeScope()

        let hiddenState =
            match gate with
            | Some g -> functional.silu (g.forward x) * input.forward x
            | None -> functional.gelu (input.forward x)

        let hiddenState =
            match norm with
            | Some m -> m.forward hiddenState
            | None -> hiddenState

        output.forward(hiddenState).MoveToOuterDisposeScope()

/// The normalisation of a block's inputs: LayerNorm (LongNet, torchscale) or RMSNorm (Llama, Mistral).
/// Notation: e embedding width.
namespace LongNet.Modules

open TorchSharp
open TorchSharp.Modules
open type TorchSharp.torch.nn

/// Which normalisation the blocks and the final layer use.
type NormKind =
    /// (x − mean) / sqrt(var + ε) · weight + bias.
    | LayerNormalization
    /// x / sqrt(mean(x²) + ε) · weight, computed in float32 (Zhang & Sennrich 2019; Llama).
    | RmsNormalization

/// RMSNorm over the last dimension `[…, e]` → `[…, e]`, with a learnt gain `weight` `[e]` (initialised to 1).
[<Sealed>]
type RmsNorm(width: int64, epsilon: float) as this =
    inherit Module<torch.Tensor, torch.Tensor>("rms_norm")

    do
        let weight = Parameter(torch.ones [| width |])
        weight.DetachFromDisposeScope() |> ignore
        this.register_parameter ("weight", weight)

    /// ε added to the mean square.
    member _.Epsilon = epsilon

    /// x · rsqrt(mean(x²) + ε) in float32 (float64 for float64 inputs), cast back to x's dtype, times the gain.
    override m.forward(x: torch.Tensor) : torch.Tensor =
        use scope = torch.NewDisposeScope()

        let x32 =
            if x.dtype = torch.ScalarType.Float64 then
                x.alias ()
            else
                x.to_type torch.ScalarType.Float32

        use eps = epsilon.ToScalar()
        let meanSquare = (x32 * x32).mean([| -1L |], true)
        let normalised = (x32 * (meanSquare + eps).rsqrt()).to_type x.dtype
        // looked up by name: moving the module to another dtype or device replaces the parameter
        (normalised * m.get_parameter "weight").MoveToOuterDisposeScope()

/// Functions over `NormKind`.
module NormKind =
    /// The JSON name: "layernorm" or "rmsnorm".
    let name (kind: NormKind) : string =
        match kind with
        | LayerNormalization -> "layernorm"
        | RmsNormalization -> "rmsnorm"

    /// Parses "layernorm" or "rmsnorm" (case-insensitive).
    let tryParse (text: string) : NormKind option =
        match text.Trim().ToLowerInvariant() with
        | "layernorm" -> Some LayerNormalization
        | "rmsnorm" -> Some RmsNormalization
        | _ -> None

    /// A normalisation module of this kind over width `width` with ε `epsilon`.
    let create (kind: NormKind) (width: int64) (epsilon: float) : Module<torch.Tensor, torch.Tensor> =
        match kind with
        | LayerNormalization -> LayerNorm([| width |], epsilon)
        | RmsNormalization -> new RmsNorm(width, epsilon)

/// Rotary position embeddings (RoPE) and xPos as pure functions of positions, head dimension and base.
/// Pairs are interleaved (dimensions 2i and 2i+1 rotate together), as in torchscale's xPos.
/// Notation: b batch, h heads, n positions, d head dim (even), i in [0, d/2) a frequency index.
///
/// Angles are computed in float64 from integer positions, so a position gets the same rotation whether
/// it is computed in a full forward or in one decoding step: the KV cache stays exact at any length.
namespace LongNet.Modules

open System
open TorchSharp

/// How `Rope` itself treats positions: always unscaled. The scaled family (PI, NTK-aware, dynamic NTK,
/// YaRN, CRD NTK) is `ScalingMethod` in PositionScaling.fs, which builds its own rotation tables.
type PositionScaling =
    /// Position p rotates by p·θ^(−2i/d): plain RoPE.
    | Unscaled

/// Settings of rotary embeddings.
type RopeSettings =
    {
        /// The base θ of the frequencies θ^(−2i/d) (10000 in RoFormer and LLaMA).
        Base: float
        /// How positions are rescaled before rotating.
        Scaling: PositionScaling
    }

/// Settings of xPos (Sun et al. 2022): RoPE whose query/key amplitudes decay with distance.
type XPosSettings =
    {
        /// The base θ of the rotation frequencies.
        Base: float
        /// γ in ζ_i^(p/γ): larger values decay more slowly (torchscale: 512).
        ScaleBase: float
    }

/// Settings of a distance bias on the attention scores: slopes spaced geometrically over the heads.
type DistanceBiasSettings =
    {
        /// How the bias grows with distance (linear as ALiBi, or logarithmic).
        Form: LongNet.BiasForm
        /// The first head's slope (the most local head).
        MaxSlope: float
        /// The last head's slope (the most far-reaching head), 0 < MinSlope ≤ MaxSlope.
        MinSlope: float
    }

/// Which relative-position scheme the attention applies to queries and keys.
type PositionEncoding =
    /// No position information beyond the causal mask.
    | NoPosition
    /// Rotary position embeddings.
    | Rope of RopeSettings
    /// Rotary embeddings with an exponential decay of the amplitude over distance.
    | XPos of XPosSettings
    /// No rotation: an additive score bias −slopeₕ · f(distance) that favours nearer keys.
    | DistanceBiased of DistanceBiasSettings

/// Pure RoPE and xPos functions.
module Rope =
    /// Default RoPE: θ = 10000, unscaled.
    let defaultRope = { Base = 10000.0; Scaling = Unscaled }

    /// Default xPos: θ = 10000, γ = 512.
    let defaultXPos = { Base = 10000.0; ScaleBase = 512.0 }

    /// Default distance bias: logarithmic, slopes from 2 (most local head) down to 1/16.
    let defaultDistanceBias =
        {
            Form = LongNet.LogarithmicBias
            MaxSlope = 2.0
            MinSlope = 0.0625
        }

    /// The per-head `DistanceBias` of a position encoding for `heads` heads (none unless `DistanceBiased`).
    let distanceBias
        (encoding: PositionEncoding)
        (heads: int)
        : Result<LongNet.DistanceBias option, LongNet.ConfigError> =
        match encoding with
        | DistanceBiased b ->
            LongNet.DistanceBias.geometricSlopes heads b.MaxSlope b.MinSlope
            |> Result.map (fun slopes -> Some { Form = b.Form; Slopes = slopes })
        | _ -> Ok None

    /// The frequencies θ^(−2i/d), i = 0 … d/2−1, as float64 values (d must be even).
    let inverseFrequencies (theta: float) (headDim: int) : float[] =
        if headDim < 2 || headDim % 2 <> 0 then
            invalidArg "headDim" $"rotary embeddings need an even head dimension ≥ 2, got {headDim}."

        Array.init (headDim / 2) (fun i -> Math.Pow(theta, -2.0 * float i / float headDim))

    /// The rescaled position that `scaling` assigns to position p.
    let scaledPosition (scaling: PositionScaling) (position: int64) : float =
        match scaling with
        | Unscaled -> float position

    /// Rotation angles `[n, d/2]` (float64) of `positions` for RoPE with `settings`: p'·θ^(−2i/d).
    let angles (settings: RopeSettings) (headDim: int) (positions: int64[]) : float[,] =
        let frequencies = inverseFrequencies settings.Base headDim

        Array2D.init positions.Length frequencies.Length (fun p i ->
            scaledPosition settings.Scaling positions.[p] * frequencies.[i])

    /// xPos amplitude exponents `[d/2]`: ζ_i = (2i + 0.4·d) / (1.4·d), in (0, 1).
    let xposZeta (headDim: int) : float[] =
        Array.init (headDim / 2) (fun i -> (2.0 * float i + 0.4 * float headDim) / (1.4 * float headDim))

    /// The largest |position| at which xPos amplitudes ζ^(±p/γ) stay finite in float32 (with margin):
    /// ζ_min^(−p/γ) ≤ 1e30.
    let xposMaxPosition (headDim: int) (scaleBase: float) : int64 =
        let zetaMin = (0.4 * float headDim) / (1.4 * float headDim)
        int64 (scaleBase * Math.Log 1.0e30 / -(Math.Log zetaMin))

    /// Full-width tables `[n, d]` from per-pair values `[n, d/2]`: entry 2i and 2i+1 get
    /// `even p i` and `odd p i`.
    let private widen (n: int) (half: int) (even: int -> int -> float) (odd: int -> int -> float) =
        Array.init (n * 2 * half) (fun k ->
            let p, j = k / (2 * half), k % (2 * half)
            if j % 2 = 0 then even p (j / 2) else odd p (j / 2))

    let private toTensor (n: int) (d: int) (values: float[]) (dtype: torch.ScalarType) (device: torch.Device) =
        torch.tensor(values, dtype = torch.float64, device = device).view(int64 n, int64 d).to_type dtype

    /// Swaps the members of every interleaved pair: `[…, d]` (x₀, x₁, x₂, x₃, …) → (x₁, x₀, x₃, x₂, …).
    let swapPairs (x: torch.Tensor) : torch.Tensor =
        let shape = x.shape

        let pairs =
            Array.append shape.[.. shape.Length - 2] [| shape.[shape.Length - 1] / 2L; 2L |]

        x.reshape(pairs).flip(-1L).reshape shape

    /// Rotation tables for one set of positions, each `[n, d]`: x' = x ⊙ cos + swapPairs(x) ⊙ sin, where
    /// `sin` carries the signs (−sin, +sin) of each pair and xPos amplitudes are folded into both.
    type Tables =
        {
            /// Multiplies the query.
            QueryCos: torch.Tensor
            /// Multiplies the pair-swapped query.
            QuerySin: torch.Tensor
            /// Multiplies the key.
            KeyCos: torch.Tensor
            /// Multiplies the pair-swapped key.
            KeySin: torch.Tensor
        }

    /// The tables of `encoding` at absolute `positions` for head dimension `headDim`, in `dtype` on
    /// `device`; `None` for `NoPosition`. Computed in float64, then converted.
    let tables
        (encoding: PositionEncoding)
        (headDim: int)
        (positions: int64[])
        (dtype: torch.ScalarType)
        (device: torch.Device)
        : Tables option =
        let n, half = positions.Length, headDim / 2

        let build (angles: float[,]) (amplitude: int -> int -> float) =
            let cos =
                widen n half (fun p i -> Math.Cos angles.[p, i] * amplitude p i) (fun p i ->
                    Math.Cos angles.[p, i] * amplitude p i)

            let sin =
                widen n half (fun p i -> -(Math.Sin angles.[p, i]) * amplitude p i) (fun p i ->
                    Math.Sin angles.[p, i] * amplitude p i)

            toTensor n headDim cos dtype device, toTensor n headDim sin dtype device

        match encoding with
        | NoPosition
        | DistanceBiased _ -> None
        | Rope settings ->
            let cos, sin = build (angles settings headDim positions) (fun _ _ -> 1.0)

            Some
                {
                    QueryCos = cos
                    QuerySin = sin
                    KeyCos = cos
                    KeySin = sin
                }
        | XPos settings ->
            let theta =
                angles
                    {
                        Base = settings.Base
                        Scaling = Unscaled
                    }
                    headDim
                    positions

            let zeta = xposZeta headDim

            let amplitude sign p i =
                Math.Pow(zeta.[i], sign * float positions.[p] / settings.ScaleBase)

            let qc, qs = build theta (amplitude 1.0)
            let kc, ks = build theta (amplitude -1.0)

            Some
                {
                    QueryCos = qc
                    QuerySin = qs
                    KeyCos = kc
                    KeySin = ks
                }

    /// Rotates (and for xPos scales) `x` `[b, h, n, d]` with one pair of tables `[n, d]`.
    let rotate (cos: torch.Tensor) (sin: torch.Tensor) (x: torch.Tensor) : torch.Tensor =
        LongNet.TensorOps.plus (x * cos) (swapPairs x * sin)

    /// Applies rotation tables (from `tables`, for n positions) to queries and keys `[b, h, n, d]`:
    /// returns (q', k') whose dot products depend on positions only through their difference.
    let apply (tables: Tables option) (q: torch.Tensor) (k: torch.Tensor) : torch.Tensor * torch.Tensor =
        match tables with
        | None -> q.alias (), k.alias ()
        | Some t -> rotate t.QueryCos t.QuerySin q, rotate t.KeyCos t.KeySin k

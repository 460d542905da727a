/// The RoPE position-scaling family as pure functions of (positions, head dimension, settings):
/// plain RoPE, linear position interpolation (PI), NTK-aware, dynamic NTK, YaRN, and CRD NTK for
/// fine-tuning (a per-sample scale schedule that grows, cycles and randomly truncates positions).
/// A sibling of `Rope` (same interleaved-pair convention, same float64 angles); `Rope`'s API is unchanged.
/// Notation: θ base, d head dim (even), i ∈ [0, d/2) frequency index, f_i = θ^(−2i/d), s scale,
/// T trained context length, L current length, p position.
namespace LongNet.Modules

open System

/// YaRN settings ("NTK-by-parts" interpolation plus an attention temperature).
type YarnSettings =
    {
        /// The context extension factor s (≥ 1).
        Scale: float
        /// The trained context length T (≥ 1).
        TrainedLength: int
        /// Below α rotations over T a frequency is fully interpolated (f/s) (paper: 1).
        Alpha: float
        /// Above β rotations over T a frequency is kept as is (extrapolated) (paper: 32); α < β.
        Beta: float
    }

/// The CRD NTK fine-tuning schedule: every parameter explicit; see `ScaledRope.crdDraw` for the exact rule.
type CrdSchedule =
    {
        /// The smallest scale drawn (≥ 1); every cycle restarts from it.
        MinScale: float
        /// The largest scale the ceiling reaches at the end of a cycle (≥ MinScale).
        MaxScale: float
        /// Training steps per cycle (≥ 1); the ceiling grows over a cycle, then restarts.
        CycleSteps: int
        /// The trained context length T (≥ 1); sampled windows are at most T long.
        TrainedLength: int
        /// The shortest sampled window (1 ≤ MinLength ≤ TrainedLength).
        MinLength: int
    }

/// How positions (equivalently, frequencies) are rescaled for a longer context.
type ScalingMethod =
    /// f_i = θ^(−2i/d): plain RoPE.
    | PlainRope
    /// Linear position interpolation: p ↦ p/s, i.e. f_i/s.
    | Interpolation of scale: float
    /// NTK-aware: base θ' = θ·s^(d/(d−2)), so the highest frequency is unchanged and the lowest is f/s.
    | NtkAware of scale: float
    /// Dynamic NTK: NTK-aware with s = max(1, L/T) from the current length L and trained length T.
    | DynamicNtk of trainedLength: int
    /// YaRN: per frequency a ramp between interpolation and extrapolation, plus a temperature.
    | Yarn of YarnSettings
    /// CRD NTK: in training, NTK-aware with a scale drawn per sample from the schedule (`ScaledRope.crdDraw`);
    /// at inference, dynamic NTK over the schedule's trained length.
    | CrdNtk of CrdSchedule

/// Settings of scaled rotary embeddings.
type ScaledRopeSettings =
    {
        /// The base θ (10000 in RoFormer and LLaMA).
        Base: float
        /// The scaling method.
        Method: ScalingMethod
    }

/// One CRD draw: the NTK scale of a training sample and the window of positions it uses.
type CrdDraw =
    {
        /// The NTK-aware scale s of this sample.
        Scale: float
        /// The first position of the sample (random start offset).
        Offset: int
        /// The number of positions of the sample (random length).
        Length: int
        /// The sample's first `Split` tokens sit at Offset …; the rest skip `Gap` positions (0 ≤ Split ≤ Length).
        Split: int
        /// How many positions are skipped after the first `Split` tokens (≥ 0).
        Gap: int
    }

/// Pure functions of the scaling family.
module ScaledRope =
    let private checkScale (scale: float) =
        if not (scale > 0.0) || Double.IsInfinity scale then
            raise (ArgumentOutOfRangeException("scale", box scale, $"scale must be finite and > 0, got {scale}."))

    /// Dynamic NTK's scale s = max(1, L/T) for current length L and trained length T.
    let dynamicScale (trainedLength: int) (currentLength: int) : float =
        if trainedLength < 1 then
            raise (
                ArgumentOutOfRangeException(
                    "trainedLength",
                    box trainedLength,
                    $"trainedLength must be ≥ 1, got {trainedLength}."
                )
            )

        max 1.0 (float currentLength / float trainedLength)

    /// The NTK-aware base θ·s^(d/(d−2)) (d ≥ 4; for d = 2 the single frequency is 1 and the base is θ).
    let ntkBase (theta: float) (headDim: int) (scale: float) : float =
        checkScale scale

        if headDim <= 2 then
            theta
        else
            theta * Math.Pow(scale, float headDim / float (headDim - 2))

    /// YaRN's ramp γ(r) ∈ [0, 1] for r rotations over the trained length: 0 (interpolate) for r < α,
    /// 1 (extrapolate) for r > β, linear in between.
    let yarnRamp (alpha: float) (beta: float) (rotations: float) : float =
        if not (alpha < beta) then
            invalidArg "beta" $"YaRN needs alpha < beta, got alpha = {alpha}, beta = {beta}."

        Math.Clamp((rotations - alpha) / (beta - alpha), 0.0, 1.0)

    /// The inverse frequencies `[d/2]` of `settings` at current length L (used by dynamic NTK only).
    let inverseFrequencies (settings: ScaledRopeSettings) (headDim: int) (currentLength: int) : float[] =
        let plain = Rope.inverseFrequencies settings.Base headDim

        match settings.Method with
        | PlainRope -> plain
        | Interpolation scale ->
            checkScale scale
            plain |> Array.map (fun f -> f / scale)
        | NtkAware scale -> Rope.inverseFrequencies (ntkBase settings.Base headDim scale) headDim
        | DynamicNtk trained ->
            Rope.inverseFrequencies (ntkBase settings.Base headDim (dynamicScale trained currentLength)) headDim
        | CrdNtk schedule ->
            Rope.inverseFrequencies
                (ntkBase settings.Base headDim (dynamicScale schedule.TrainedLength currentLength))
                headDim
        | Yarn y ->
            checkScale y.Scale

            plain
            |> Array.map (fun f ->
                let rotations = float y.TrainedLength * f / (2.0 * Math.PI)
                let g = yarnRamp y.Alpha y.Beta rotations
                (1.0 - g) * f / y.Scale + g * f)

    /// The factor YaRN multiplies both q and k by (so logits by its square): 0.1·ln s + 1 for s > 1, else 1
    /// (as YaRN's reference code, which folds it into cos and sin). 1 for every other method.
    let attentionScale (settings: ScaledRopeSettings) : float =
        match settings.Method with
        | Yarn y when y.Scale > 1.0 -> 0.1 * Math.Log y.Scale + 1.0
        | _ -> 1.0

    /// Rotation angles `[n, d/2]` (float64): p·f'_i for each of `positions` at current length L.
    let angles (settings: ScaledRopeSettings) (headDim: int) (currentLength: int) (positions: int64[]) : float[,] =
        let f = inverseFrequencies settings headDim currentLength
        Array2D.init positions.Length f.Length (fun p i -> float positions.[p] * f.[i])

    /// Rotates one vector `[d]` by per-pair angles `[d/2]` (pairs 2i, 2i+1 interleaved, as `Rope.rotate`).
    let rotateVector (angles: float[]) (x: float[]) : float[] =
        Array.init x.Length (fun j ->
            let a = angles.[j / 2]

            if j % 2 = 0 then
                x.[j] * Math.Cos a - x.[j + 1] * Math.Sin a
            else
                x.[j] * Math.Cos a + x.[j - 1] * Math.Sin a)

    /// RoPE tables (`Rope.Tables`, each `[n, d]`, for `Rope.apply`) of `settings` at `positions` and current
    /// length L, with YaRN's `attentionScale` folded into both the query and the key tables.
    let tables
        (settings: ScaledRopeSettings)
        (headDim: int)
        (currentLength: int)
        (positions: int64[])
        (dtype: TorchSharp.torch.ScalarType)
        (device: TorchSharp.torch.Device)
        : Rope.Tables =
        let a = angles settings headDim currentLength positions
        let m = attentionScale settings
        let n = positions.Length

        let table (f: int -> int -> float) =
            let values = Array.init (n * headDim) (fun k -> f (k / headDim) (k % headDim))

            TorchSharp.torch
                .tensor(values, dtype = TorchSharp.torch.float64, device = device)
                .view(int64 n, int64 headDim)
                .to_type
                dtype

        let cos = table (fun p j -> m * Math.Cos a.[p, j / 2])

        let sin = table (fun p j -> (if j % 2 = 0 then -m else m) * Math.Sin a.[p, j / 2])

        {
            QueryCos = cos
            QuerySin = sin
            KeyCos = cos
            KeySin = sin
        }

    /// Checks a CRD schedule; raises ArgumentOutOfRangeException naming the parameter.
    let validateCrd (schedule: CrdSchedule) : CrdSchedule =
        let fail (name: string) (value: obj) (rule: string) =
            raise (ArgumentOutOfRangeException(name, value, $"{name} must be {rule}, got {value}."))

        if not (schedule.MinScale >= 1.0) then
            fail "minScale" (box schedule.MinScale) "≥ 1"

        if
            not (schedule.MaxScale >= schedule.MinScale)
            || Double.IsInfinity schedule.MaxScale
        then
            fail "maxScale" (box schedule.MaxScale) "finite and ≥ minScale"

        if schedule.CycleSteps < 1 then
            fail "cycleSteps" (box schedule.CycleSteps) "≥ 1"

        if schedule.TrainedLength < 1 then
            fail "trainedLength" (box schedule.TrainedLength) "≥ 1"

        if schedule.MinLength < 1 || schedule.MinLength > schedule.TrainedLength then
            fail "minLength" (box schedule.MinLength) "in [1, trainedLength]"

        schedule

    /// The CRD scale ceiling at a training step: c = (step mod C)/(C − 1) (c = 1 when C = 1), ceiling =
    /// MinScale + (MaxScale − MinScale)·c. It grows linearly over each cycle of C steps, then restarts.
    let crdCeiling (schedule: CrdSchedule) (step: int) : float =
        let schedule = validateCrd schedule

        if step < 0 then
            raise (ArgumentOutOfRangeException("step", box step, $"step must be ≥ 0, got {step}."))

        let c =
            if schedule.CycleSteps = 1 then
                1.0
            else
                float (step % schedule.CycleSteps) / float (schedule.CycleSteps - 1)

        schedule.MinScale + (schedule.MaxScale - schedule.MinScale) * c

    /// The CRD draw of sample `sample` at `step` for `seed`, reproducible: with u₁ … u₅ uniform in [0, 1)
    /// from `System.Random(hash(seed, step, sample))`: scale s = MinScale + u₁·(ceiling(step) − MinScale);
    /// length ℓ = MinLength + ⌊u₂·(T − MinLength + 1)⌋; room = max(0, ⌊s·T⌋ − ℓ) spare positions;
    /// offset = ⌊u₃·(room + 1)⌋; gap = ⌊u₄·(room − offset + 1)⌋; split = ⌊u₅·(ℓ + 1)⌋ (capped at ℓ).
    /// The sample's positions (`crdPositions`) are offset … offset+split−1, then offset+split+gap …
    /// offset+gap+ℓ−1: all inside the scaled context [0, max(ℓ, ⌊s·T⌋)), and distances up to s·T appear
    /// in a sample of only ℓ ≤ T tokens.
    let crdDraw (schedule: CrdSchedule) (seed: int) (step: int) (sample: int) : CrdDraw =
        let ceiling = crdCeiling schedule step

        let mix =
            ((int64 seed * 1_000_003L + int64 step) * 1_000_033L + int64 sample) % 2_147_483_647L

        let rng = Random(int (abs mix))
        let u1, u2, u3 = rng.NextDouble(), rng.NextDouble(), rng.NextDouble()
        let u4, u5 = rng.NextDouble(), rng.NextDouble()
        let scale = schedule.MinScale + u1 * (ceiling - schedule.MinScale)
        let t = schedule.TrainedLength

        let length =
            min t (schedule.MinLength + int (u2 * float (t - schedule.MinLength + 1)))

        let span = max length (int (Math.Floor(scale * float t)))
        let room = span - length
        let offset = min room (int (u3 * float (room + 1)))
        let gap = min (room - offset) (int (u4 * float (room - offset + 1)))
        let split = min length (int (u5 * float (length + 1)))

        {
            Scale = scale
            Offset = offset
            Length = length
            Split = split
            Gap = gap
        }

    /// The positions `[ℓ]` of a CRD draw: offset + i for i < split, offset + gap + i from split on.
    let crdPositions (draw: CrdDraw) : int64[] =
        Array.init draw.Length (fun i -> int64 (draw.Offset + i + (if i < draw.Split then 0 else draw.Gap)))

    /// The NTK-aware settings of a CRD draw with base θ.
    let crdSettings (theta: float) (draw: CrdDraw) : ScaledRopeSettings =
        {
            Base = theta
            Method = NtkAware draw.Scale
        }

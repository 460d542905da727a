/// The semantic facts of dilated attention (docs/concepts.md, "Facts the tests must prove"), as
/// FsCheck properties over generated configs, shapes and seeds. Every property compares the library
/// with an independent value — dense attention, the loop-built union oracle, finite differences, a
/// perturbed or truncated input — never with the same call on the same input.
module LongNet.Tests.DilatedProperties

open System
open FsCheck.Xunit
open TorchSharp
open Xunit
open LongNet
open LongNet.Tests.Generators

type private Tensor = torch.Tensor

/// The largest absolute difference (in float64); NaN when either side holds NaN.
let private maxDiff (a: Tensor) (b: Tensor) : float =
    if a.numel () = 0L then
        0.0
    else
        (a.to_type torch.float64 - b.to_type torch.float64).abs().max().item<float>()

let private expect (ok: bool) (message: unit -> string) =
    if not ok then
        failwith (message ())

let private within (tolerance: float) (what: string) (actual: Tensor) (expected: Tensor) =
    let d = maxDiff actual expected
    expect (d <= tolerance) (fun () -> $"{what}: max |difference| = {d:E3} > {tolerance:E1}")

/// The softmax scale from the definition (the configured one, else 1/sqrt(headDim)), written out here
/// rather than taken from `DilatedConfig.scaleFor`, so a wrong scale in the library is caught.
let private scaleFrom (config: DilatedConfig) (headDim: int) =
    match config.Scale with
    | Some s -> s
    | None -> 1.0 / sqrt (float headDim)

let private scaleOf (case: Case) = scaleFrom case.Config case.HeadDim

let private shapeOf (case: Case) =
    [| int64 case.Batch; int64 case.Heads; int64 case.N; int64 case.HeadDim |]

let private withCausal (causal: bool) (case: Case) =
    { case with
        Config = { case.Config with Causal = causal }
    }

/// `[1, 1, n, 1]` bool: position > p.
let private after (n: int) (p: int) =
    torch.arange(int64 n, dtype = torch.int64).gt((int64 p).ToScalar()).view(1L, 1L, int64 n, 1L)

/// A copy of `x` with `delta` added at flat index `i`.
let private bumped (x: Tensor) (i: int) (delta: float) =
    let values = x.detach().flatten().data<float>().ToArray()
    values.[i] <- values.[i] + delta
    torch.tensor(values, dtype = torch.float64).reshape x.shape

/// q, k, v leaves that record gradients.
let private leaves (case: Case) =
    let q, k, v = qkv case
    q.requires_grad_ true, k.requires_grad_ true, v.requires_grad_ true

/// Gradients of Σ projection ⊙ f(q, k, v) with respect to q, k, v.
let private gradients (f: Tensor -> Tensor -> Tensor -> Tensor) (projection: Tensor) (case: Case) =
    let q, k, v = leaves case
    let loss = (f q k v * projection).sum()
    loss.backward ()
    q.grad, k.grad, v.grad

// ----------------------------------------------------------------------------------------------
// Equal to an independent attention

/// Textbook attention, written here with torch's own softmax (no library code): softmax(q·kᵀ·scale)·v,
/// causal keys above the diagonal set to −∞.
let private plainAttention (scale: float) (causal: bool) (q: Tensor) (k: Tensor) (v: Tensor) =
    let n = q.shape.[2]
    let scores = q.matmul (k.transpose (-2L, -1L)) * scale

    let scores =
        if causal then
            let future = torch.ones(n, n, dtype = torch.ScalarType.Bool).triu 1L
            scores.masked_fill (future, Double.NegativeInfinity)
        else
            scores

    torch.nn.functional.softmax(scores, -1L).matmul v

[<Property(Arbitrary = [| typeof<Cases> |], MaxTest = 300)>]
let ``a single group with w at least N and r = 1 equals dense attention`` (case: Case) =
    init ()
    use _scope = torch.NewDisposeScope()
    // w = N + something in [0, 20): the one segment covers the whole sequence, sometimes with padding.
    let w = case.N + case.Seed % 20

    let config =
        configOf [ w, 1 ] case.Config.Offsets case.Config.Causal case.Config.Scale

    let q, k, v = qkv case
    let out = DilatedAttention.forward config q k v
    let dense, _ = Dense.attend (scaleOf case) config.Causal q k v
    within 1e-10 "dilated vs Dense.attend" out dense
    within 1e-10 "dilated vs softmax(q·kᵀ·scale)·v" out (plainAttention (scaleOf case) config.Causal q k v)

[<Property(Arbitrary = [| typeof<Cases> |], MaxTest = 1000)>]
let ``the mixed output equals one softmax over the multiset union of the groups' keys`` (case: Case) =
    init ()
    use _scope = torch.NewDisposeScope()
    let q, k, v = qkv case
    let out = DilatedAttention.forward case.Config q k v
    let counts = Oracle.counts case.Config case.Heads case.N
    let expected = Dense.attendWithCounts (scaleOf case) counts q k v
    expect (not (out.isnan().any().item<bool>())) (fun () -> "the output holds NaN")
    within 1e-10 "dilated vs union oracle" out expected

    // Positions that no group covers output exactly 0.
    let covered = Oracle.covered case.Config case.Heads case.N

    let uncovered =
        torch
            .tensor(
                Array.init (case.Heads * case.N) (fun i -> not covered.[i / case.N, i % case.N]),
                dtype = torch.ScalarType.Bool
            )
            .view(1L, int64 case.Heads, int64 case.N, 1L)

    let atUncovered = torch.where (uncovered, out, torch.zeros_like out)
    expect (atUncovered.abs().max().item<float>() = 0.0) (fun () -> "an uncovered position is not 0")

/// A distance bias drawn from the case's seed: either form, slopes in [0, 1) per head (some 0).
let private biasOf (case: Case) : DistanceBias =
    let random = Random(case.Seed + 17)

    {
        Form = (if random.Next 2 = 0 then LinearBias else LogarithmicBias)
        Slopes = List.init case.Heads (fun _ -> if random.Next 4 = 0 then 0.0 else random.NextDouble())
    }

/// exp(−slopeₕ·f(|q − k|)) `[h, n, n]`, written out with loops from the definition of the bias.
let private biasWeights (bias: DistanceBias) (heads: int) (n: int) : Tensor =
    let f (delta: int) =
        match bias.Form with
        | LinearBias -> float delta
        | LogarithmicBias -> log (1.0 + float delta)

    let slopes = List.toArray bias.Slopes

    let values =
        Array.init (heads * n * n) (fun i ->
            let h, q, k = i / (n * n), (i / n) % n, i % n
            exp (-slopes.[h] * f (abs (q - k))))

    torch.tensor (values, int64 heads, int64 n, int64 n, dtype = torch.float64)

[<Property(Arbitrary = [| typeof<Cases> |], MaxTest = 300)>]
let ``with a distance bias the mixed output equals one biased softmax over the union, on both kernels`` (case: Case) =
    init ()
    use _scope = torch.NewDisposeScope()
    let bias = biasOf case
    let config = { case.Config with Bias = Some bias }
    let q, k, v = qkv case
    // a key seen c times with bias b weighs c·exp(b)·exp(score): fold exp(b) into the multiplicities
    let counts =
        Oracle.counts case.Config case.Heads case.N * biasWeights bias case.Heads case.N

    let expected = Dense.attendWithCounts (scaleOf case) counts q k v

    for kernel in [ DilatedAttention.Fused; DilatedAttention.Explicit ] do
        let out, _ = DilatedAttention.forwardUsing kernel false config q k v
        within 1e-10 $"{kernel} biased dilated vs biased union oracle" out expected

[<Property(Arbitrary = [| typeof<SmallCases> |], MaxTest = 100)>]
let ``with a distance bias the fused gradients equal autograd through the explicit path`` (case: Case) =
    init ()
    use _scope = torch.NewDisposeScope()

    let config =
        { case.Config with
            Bias = Some(biasOf case)
        }

    let projection = randn (case.Seed + 5) (shapeOf case)

    let through kernel =
        gradients (fun q k v -> fst (DilatedAttention.forwardUsing kernel false config q k v)) projection case

    let fq, fk, fv = through DilatedAttention.Fused
    let eq, ek, ev = through DilatedAttention.Explicit
    within 1e-9 "dq" fq eq
    within 1e-9 "dk" fk ek
    within 1e-9 "dv" fv ev

// ----------------------------------------------------------------------------------------------
// Causality and padding

[<Property(Arbitrary = [| typeof<Cases> |], MaxTest = 300)>]
let ``changing keys and values after position p never changes causal outputs at or before p`` (case: Case) =
    init ()
    use _scope = torch.NewDisposeScope()
    let case = withCausal true case
    let p = Random(case.Seed).Next case.N
    let q, k, v = qkv case
    let later = after case.N p
    let k' = torch.where (later, randn (case.Seed + 3) (shapeOf case) * 10.0, k)
    let v' = torch.where (later, randn (case.Seed + 4) (shapeOf case) * 10.0, v)
    let before = DilatedAttention.forward case.Config q k v
    let changed = DilatedAttention.forward case.Config q k' v'
    within 1e-13 $"outputs at ≤ {p}" (changed.narrow (2L, 0L, int64 p + 1L)) (before.narrow (2L, 0L, int64 p + 1L))

/// One group's (out, lse) computed by the combinators at the group's full segment length w (the
/// library clips w to n) with the padding rows of the last segment filled with large random values
/// (the library pads with zeros): same positions, different amount and content of padding.
let private groupWithNoisyPadding (seed: int) (config: DilatedConfig) (g: Group) (q: Tensor) (k: Tensor) (v: Tensor) =
    let b, heads, n, d = q.shape.[0], q.shape.[1], q.shape.[2], q.shape.[3]
    let w, r = g.SegmentLength, g.DilationRate
    let segments = Segment.count w n
    let padRows = segments * int64 w - n

    let segmented (x: Tensor) (salt: int) =
        let filled =
            if padRows = 0L then
                x
            else
                torch.cat ([| x; randn (seed + salt) [| b; heads; padRows; d |] * 50.0 |], 2L)

        filled.view (b, heads, segments, int64 w, d)

    let offsets = Dilate.offsets config.Offsets (int heads) r q.device
    let _, real = Dilate.positions w r n offsets

    let dilated (x: Tensor) salt =
        Dilate.gather r offsets (segmented x salt)

    let scale = scaleFrom config (int d)

    let out, lse =
        Attend.attend scale config.Causal (Some real) (dilated q 11) (dilated k 12) (dilated v 13)

    Scatter.scatter w r n offsets real out lse

// Padding independence, formulation 1 (both causal and not). Padding positions are masked: they are
// never keys and never outputs. So for every group, the (out, lse) at the n real positions must not
// change when the last segment is padded up to the full w (instead of the library's w clipped to n)
// and the padding rows hold large random values instead of zeros. Outputs at positions < N would
// change if any padding row leaked in as a key, or if clipping w changed which positions a head keeps.
[<Property(Arbitrary = [| typeof<Cases> |], MaxTest = 500)>]
let ``outputs below N do not depend on padding`` (case: Case) =
    init ()
    use _scope = torch.NewDisposeScope()
    let q, k, v = qkv case

    for g in case.Config.Groups do
        let out, lse = DilatedAttention.group case.Config g q k v
        let out', lse' = groupWithNoisyPadding case.Seed case.Config g q k v
        within 1e-12 $"group {g} output" out' out
        let finite, finite' = lse.isfinite (), lse'.isfinite ()
        expect (finite.eq(finite').all().item<bool>()) (fun () -> $"group {g}: the covered positions differ")
        let zero = torch.zeros_like lse
        within 1e-12 $"group {g} lse" (torch.where (finite', lse', zero)) (torch.where (finite, lse, zero))

// Padding independence, formulation 2 (causal only). Extending the sequence from N to N' > N changes
// how much padding every group's last segment gets (and turns some padding into real positions, and
// the clipped w of a group longer than N). In causal mode positions < N can never see positions ≥ N,
// so the first N outputs must be those of the length-N call. (Not causal, positions < N in the last
// segment legitimately see the new real keys, so there is no such fact.)
[<Property(Arbitrary = [| typeof<Cases> |], MaxTest = 300)>]
let ``causal outputs below N do not depend on how far the sequence continues`` (case: Case) =
    init ()
    use _scope = torch.NewDisposeScope()
    let case = withCausal true case
    let extra = 1L + int64 (case.Seed % 40)
    let q, k, v = qkv case

    let tail salt =
        randn (case.Seed + salt) [| int64 case.Batch; int64 case.Heads; extra; int64 case.HeadDim |]

    let extend (x: Tensor) salt = torch.cat ([| x; tail salt |], 2L)
    let short = DilatedAttention.forward case.Config q k v

    let long =
        DilatedAttention.forward case.Config (extend q 5) (extend k 6) (extend v 7)

    within 1e-12 $"first {case.N} of {int64 case.N + extra} outputs" (long.narrow (2L, 0L, int64 case.N)) short

// ----------------------------------------------------------------------------------------------
// Independence of heads and batch items

// Head j's output depends only on head j's inputs. (Permuting heads would not permute outputs:
// a head's offset depends on its index.) Replace every other head's q, k, v; head j must not move.
[<Property(Arbitrary = [| typeof<Cases> |], MaxTest = 200)>]
let ``heads are independent`` (case: Case) =
    init ()
    use _scope = torch.NewDisposeScope()
    let case = { case with Heads = max 2 case.Heads }
    let j = Random(case.Seed).Next case.Heads
    let q, k, v = qkv case

    let others =
        torch.arange(int64 case.Heads, dtype = torch.int64).ne((int64 j).ToScalar()).view(1L, int64 case.Heads, 1L, 1L)

    let replaced (x: Tensor) salt =
        torch.where (others, randn (case.Seed + salt) (shapeOf case) * 5.0, x)

    let out = DilatedAttention.forward case.Config q k v

    let out' =
        DilatedAttention.forward case.Config (replaced q 3) (replaced k 4) (replaced v 5)

    within 1e-13 $"head {j}" (out'.select (1L, int64 j)) (out.select (1L, int64 j))

// Each batch item's output equals the output of that item alone (batch of one).
[<Property(Arbitrary = [| typeof<Cases> |], MaxTest = 100)>]
let ``batch items are independent`` (case: Case) =
    init ()
    use _scope = torch.NewDisposeScope()
    let case = { case with Batch = max 2 case.Batch }
    let q, k, v = qkv case
    let out = DilatedAttention.forward case.Config q k v

    for b in 0L .. int64 case.Batch - 1L do
        let item (x: Tensor) = x.narrow (0L, b, 1L)
        let alone = DilatedAttention.forward case.Config (item q) (item k) (item v)
        within 1e-12 $"batch item {b}" (item out) alone

// ----------------------------------------------------------------------------------------------
// Gradients

// Central differences of L = Σ P ⊙ forward(q, k, v) (P a random projection) at three random
// coordinates of each of q, k, v, against autograd: |fd − g| ≤ 1e-6·|g| + 1e-8.
[<Property(Arbitrary = [| typeof<SmallCases> |], MaxTest = 100)>]
let ``gradients match central finite differences`` (case: Case) =
    init ()
    use _scope = torch.NewDisposeScope()
    let projection = randn (case.Seed + 9) (shapeOf case)
    let forward = DilatedAttention.forward case.Config
    let dq, dk, dv = gradients forward projection case
    let q, k, v = qkv case

    let loss (q: Tensor) (k: Tensor) (v: Tensor) =
        use _noGrad = torch.no_grad ()
        use _inner = torch.NewDisposeScope()
        (forward q k v * projection).sum().item<float>()

    let eps = 1e-6
    let rnd = Random(case.Seed)
    let size = q.numel () |> int

    let checks =
        [
            "dq", dq, (fun x -> loss x k v), q
            "dk", dk, (fun x -> loss q x v), k
            "dv", dv, (fun x -> loss q k x), v
        ]

    for name, grad, lossOf, x in checks do
        let g = grad.flatten().data<float>().ToArray()

        for _ in 1..3 do
            let i = rnd.Next size
            let fd = (lossOf (bumped x i eps) - lossOf (bumped x i -eps)) / (2.0 * eps)
            let err = abs (fd - g.[i])

            expect (err <= 1e-6 * abs g.[i] + 1e-8) (fun () ->
                $"{name}[{i}]: autograd {g.[i]:R}, finite difference {fd:R}, |difference| {err:E3}")

// Autograd through the library against autograd through the union oracle (dense attention where each
// key counts as often as groups show it): dq, dk, dv everywhere within 1e-9.
[<Property(Arbitrary = [| typeof<Cases> |], MaxTest = 500)>]
let ``gradients equal the union oracle's gradients`` (case: Case) =
    init ()
    use _scope = torch.NewDisposeScope()
    let projection = randn (case.Seed + 9) (shapeOf case)
    let counts = Oracle.counts case.Config case.Heads case.N
    let dq, dk, dv = gradients (DilatedAttention.forward case.Config) projection case

    let eq, ek, ev =
        gradients (Dense.attendWithCounts (scaleOf case) counts) projection case

    within 1e-9 "dq" dq eq
    within 1e-9 "dk" dk ek
    within 1e-9 "dv" dv ev

// ----------------------------------------------------------------------------------------------
// Head offsets

[<Property(Arbitrary = [| typeof<AnyRates> |], MaxTest = 300)>]
let ``head offsets follow the definition and lie in 0 to r - 1`` (x: HeadsAndRate) =
    for mode in [ Paper; Blocks ] do
        for j in 0 .. x.Heads - 1 do
            let s = HeadOffsets.offset mode x.Heads x.Rate j
            expect (s = Oracle.offset mode x.Heads x.Rate j) (fun () -> $"{mode} offset of head {j} = {s}")
            expect (0 <= s && s < x.Rate) (fun () -> $"{mode} offset of head {j} = {s} outside [0, {x.Rate})")

// With r | H both modes give every offset to exactly H / r heads, so in a group (w, r) every real
// position is kept by exactly H / r heads. Counted on the library's own `Dilate.positions`.
[<Property(Arbitrary = [| typeof<DividingRates> |], MaxTest = 200)>]
let ``paper and blocks offsets cover each position the same number of times when r divides H`` (x: HeadsAndRate) =
    init ()
    use _scope = torch.NewDisposeScope()
    let w = x.Rate * 3
    let n = 2L * int64 w + 1L

    for mode in [ Paper; Blocks ] do
        let offsets = Dilate.offsets mode x.Heads x.Rate torch.CPU
        let positions, real = Dilate.positions w x.Rate n offsets

        let counts =
            positions.masked_select(real).bincount(null, minlength = n).data<int64>().ToArray()

        expect (counts |> Array.forall (fun c -> c = int64 (x.Heads / x.Rate))) (fun () ->
            $"{mode}: coverage per position {counts |> Array.distinct |> Array.toList}, expected {x.Heads / x.Rate}")

[<Fact>]
let ``paper and blocks offsets differ on four heads with r = 2`` () =
    init ()
    use _scope = torch.NewDisposeScope()

    let offsetsOf mode =
        List.init 4 (HeadOffsets.offset mode 4 2)

    Assert.Equal<int list>([ 0; 1; 0; 1 ], offsetsOf Paper)
    Assert.Equal<int list>([ 0; 0; 1; 1 ], offsetsOf Blocks)

    let case =
        {
            Config = configOf [ 4, 2 ] Paper false None
            Batch = 1
            Heads = 4
            N = 8
            HeadDim = 3
            Seed = 17
        }

    let q, k, v = qkv case

    let outputOf mode =
        let config = { case.Config with Offsets = mode }
        let out = DilatedAttention.forward config q k v
        // each mode agrees with the union oracle built from its own offsets
        let expected =
            Dense.attendWithCounts (scaleOf case) (Oracle.counts config 4 8) q k v

        within 1e-10 $"{mode} vs union oracle" out expected
        out

    let paper, blocks = outputOf Paper, outputOf Blocks
    // heads 0 and 3 use the same offset in both modes; heads 1 and 2 swap theirs
    within 0.0 "head 0" (paper.select (1L, 0L)) (blocks.select (1L, 0L))
    within 0.0 "head 3" (paper.select (1L, 3L)) (blocks.select (1L, 3L))
    expect (maxDiff (paper.select (1L, 1L)) (blocks.select (1L, 1L)) > 1e-3) (fun () -> "head 1 does not differ")

// Regression (found by the union property): with r > N the library used to clip r to N, which gave
// head j the offset j mod N instead of j mod r. Group (10, 5), H = 5, N = 3, paper offsets: head j
// keeps only position j, so heads 0–2 output v at their own position and heads 3, 4 (offsets 3, 4 ≥ N)
// cover nothing and output 0. Blocks offsets (ceil(5 / 5) = 1 head per block) are the same here.
[<Fact>]
let ``a group whose rate exceeds N keeps each head's configured offset`` () =
    init ()
    use _scope = torch.NewDisposeScope()

    for mode in [ Paper; Blocks ] do
        let case =
            {
                Config = configOf [ 10, 5 ] mode false None
                Batch = 1
                Heads = 5
                N = 3
                HeadDim = 2
                Seed = 5
            }

        let q, k, v = qkv case
        let out = DilatedAttention.forward case.Config q k v

        for j in 0L .. 2L do
            within 1e-15 $"{mode} head {j}" (out.select(1L, j).select(1L, j)) (v.select(1L, j).select(1L, j))

        within
            0.0
            $"{mode} heads 3 and 4"
            (out.narrow (1L, 3L, 2L))
            (torch.zeros (1L, 2L, 3L, 2L, dtype = torch.float64))

// forward keeps its intermediates in its own dispose scope: called with no scope around it, it leaves
// exactly one live tensor (its output) on this thread, and none once that is disposed.
[<Fact>]
let ``forward leaves no tensor alive but its output`` () =
    init ()

    let case =
        {
            Config = configOf [ 4, 1; 8, 2; 16, 4 ] Paper true None
            Batch = 2
            Heads = 3
            N = 37
            HeadDim = 5
            Seed = 3
        }

    let q, k, v = qkv case

    let live () =
        DisposeScopeManager.Statistics.ThreadTotalLiveCount

    let before = live ()
    let out = DilatedAttention.forward case.Config q k v
    let withOutput = live ()
    out.Dispose()
    let after = live ()

    for x in [ q; k; v ] do
        x.Dispose()

    Assert.Equal(before + 1L, withOutput)
    Assert.Equal(before, after)

// ----------------------------------------------------------------------------------------------
// Errors

let private attempt (invalid: Invalid) =
    match invalid with
    | BadConfig(ws, rs, scale, _) -> DilatedConfig.createOrRaise ws rs Paper false scale |> ignore
    | BadOffsets(text, _) ->
        match HeadOffsets.parse text with
        | Ok mode -> failwith $"'{text}' parsed as {mode}"
        | Error e -> e.Raise()
    | BadInputs(groups, q, k, v, checkInputs, _) ->
        init ()
        use _scope = torch.NewDisposeScope()
        let config = configOf groups Paper false None

        DilatedAttention.forwardWithLse checkInputs config (tensorOf q) (tensorOf k) (tensorOf v)
        |> ignore

[<Property(Arbitrary = [| typeof<Invalids> |], MaxTest = 500)>]
let ``invalid configurations and inputs give a clear error naming the parameter`` (invalid: Invalid) =
    let expected = invalid.Parameter

    let outcome =
        try
            attempt invalid
            Error "no exception"
        with
        | :? ArgumentException as e when e.ParamName = expected -> Ok()
        | :? ArgumentException as e -> Error $"ArgumentException with ParamName '{e.ParamName}': {e.Message}"
        | e -> Error $"{e.GetType().Name}: {e.Message}"

    match outcome with
    | Ok() -> ()
    | Error why -> failwith $"expected an ArgumentException naming '{expected}', got {why}"

// ----------------------------------------------------------------------------------------------
// Lower precisions

/// Runs the case in `dtype`; returns (that output, the float64 union oracle on the same rounded inputs).
let private inPrecision (dtype: torch.ScalarType) (case: Case) =
    let q, k, v = qkv case
    let low (x: Tensor) = x.to_type dtype
    let ql, kl, vl = low q, low k, low v
    let out = DilatedAttention.forward case.Config ql kl vl
    let wide (x: Tensor) = x.to_type torch.float64
    let counts = Oracle.counts case.Config case.Heads case.N

    let reference =
        Dense.attendWithCounts (scaleOf case) counts (wide ql) (wide kl) (wide vl)

    out, reference

/// Every element within tolerance · max(1, |reference|): absolute for outputs up to 1, relative beyond
/// (a low-precision format rounds relative to the magnitude; randn values of v reach about ±4).
let private withinScaled (tolerance: float) (what: string) (actual: Tensor) (reference: Tensor) =
    let diff = (actual.to_type torch.float64 - reference).abs()
    let bound = reference.abs().clamp_min(1.0) * tolerance
    let worst = (diff / bound).max().item<float>()

    expect (worst <= 1.0) (fun () -> $"{what}: worst |difference| / (tolerance · max(1, |reference|)) = {worst:F3} > 1")

let private lowPrecisionFact (dtype: torch.ScalarType) (tolerance: float) (case: Case) =
    init ()
    use _scope = torch.NewDisposeScope()
    let out, reference = inPrecision dtype case
    expect (out.dtype = dtype) (fun () -> $"output dtype {out.dtype}")
    expect (out.isfinite().all().item<bool>()) (fun () -> "non-finite output")
    withinScaled tolerance $"{dtype} vs float64" out reference

// Measured over 400 generated cases: float32 ≤ 1.6e-6, float16 ≤ 2.7e-3, bfloat16 ≤ 1.8e-2 (one
// bfloat16 ulp of an output in [2, 4)).
[<Property(Arbitrary = [| typeof<Cases> |], MaxTest = 200)>]
let ``float32 inputs give finite outputs within 1e-5 of float64`` (case: Case) =
    lowPrecisionFact torch.float32 1e-5 case

[<Property(Arbitrary = [| typeof<Cases> |], MaxTest = 200)>]
let ``float16 inputs give finite outputs within 1e-2 of float64`` (case: Case) =
    lowPrecisionFact torch.float16 1e-2 case

[<Property(Arbitrary = [| typeof<Cases> |], MaxTest = 200)>]
let ``bfloat16 inputs give finite outputs within 3e-2 of float64`` (case: Case) =
    lowPrecisionFact torch.bfloat16 3e-2 case

// ----------------------------------------------------------------------------------------------
// Geometric groups

[<Property(MaxTest = 500)>]
let ``geometric groups grow by their ratios and cover every head and position, or are refused by name``
    (w0: FsCheck.PositiveInt)
    (segmentRatio: byte)
    (rateRatio: byte)
    (count: byte)
    (heads: byte)
    =
    let w0 = 1 + w0.Get % 256
    let segmentRatio, rateRatio = 2 + int segmentRatio % 3, 1 + int rateRatio % 4
    let count, heads = 1 + int count % 6, 1 + int heads % 16

    match Groups.geometric w0 segmentRatio rateRatio count heads with
    | Error e ->
        let lastRate = pown rateRatio (count - 1)

        expect
            (rateRatio > segmentRatio && e.Parameter = "rateRatio"
             || lastRate > heads && e.Parameter = "count")
            (fun () -> $"refused {e.Parameter}: {e.Message}")
    | Ok groups ->
        expect (groups.Length = count) (fun () -> $"{groups.Length} groups, asked for {count}")

        groups
        |> List.iteri (fun i g ->
            expect (g.SegmentLength = w0 * pown segmentRatio i && g.DilationRate = pown rateRatio i) (fun () ->
                $"group {i} is {g}")

            let covered =
                Set.ofList [ for j in 0 .. heads - 1 -> HeadOffsets.offset Paper heads g.DilationRate j ]

            expect (covered.Count = g.DilationRate) (fun () ->
                $"group {g} with {heads} heads covers offsets {covered}"))

[<Property(MaxTest = 300)>]
let ``geometric bias slopes run from the largest to the smallest at a constant ratio``
    (heads: byte)
    (a: uint16)
    (b: uint16)
    =
    let heads = 1 + int heads % 16
    let a, b = 1e-3 + float a / 6000.0, 1e-3 + float b / 6000.0
    let maxSlope, minSlope = max a b, min a b

    match DistanceBias.geometricSlopes heads maxSlope minSlope with
    | Error e -> failwith e.Message
    | Ok slopes ->
        let s = List.toArray slopes
        expect (s.Length = heads) (fun () -> $"{s.Length} slopes for {heads} heads")
        expect (abs (s.[0] - maxSlope) <= 1e-12 * maxSlope) (fun () -> $"first slope {s.[0]} ≠ {maxSlope}")

        if heads > 1 then
            expect (abs (s.[heads - 1] - minSlope) <= 1e-9 * maxSlope) (fun () ->
                $"last slope {s.[heads - 1]} ≠ {minSlope}")

            for i in 1 .. heads - 2 do
                let r1, r2 = s.[i] / s.[i - 1], s.[i + 1] / s.[i]
                expect (abs (r1 - r2) <= 1e-9) (fun () -> $"ratios {r1} and {r2} differ at head {i}")

    // a minimum above the maximum, or a non-positive one, is refused naming the parameter
    match DistanceBias.geometricSlopes heads minSlope (maxSlope * 2.0) with
    | Error e -> expect (e.Parameter = "biasMinSlope") (fun () -> $"refused {e.Parameter}")
    | Ok _ -> failwith "biasMinSlope above biasMaxSlope was accepted"

[<Fact>]
let ``a distance bias needs finite slopes at least 0, one per head`` () =
    let check heads slopes =
        match DistanceBias.validate heads { Form = LinearBias; Slopes = slopes } with
        | Ok _ -> None
        | Error e -> Some e.Parameter

    Assert.Equal(None, check (Some 2) [ 0.0; 1.0 ])
    Assert.Equal(Some "biasSlopes", check (Some 3) [ 0.0; 1.0 ])
    Assert.Equal(Some "biasSlopes", check None [ -1.0 ])
    Assert.Equal(Some "biasSlopes", check None [ nan ])
    Assert.Equal(Some "biasSlopes", check None [])
    Assert.Equal(Ok LogarithmicBias, DistanceBias.parseForm " LOG ")

    Assert.Equal(
        "biasForm",
        (DistanceBias.parseForm "cubic"
         |> Result.mapError _.Parameter
         |> function
             | Error p -> p
             | Ok _ -> "")
    )

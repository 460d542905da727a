/// The position-scaling family: scale 1 is plain RoPE for every method, rotated scores depend only on
/// position differences, the NTK base formula, YaRN's ramp ends, dynamic NTK, and the CRD schedule
/// (grows within a cycle, restarts, stays within bounds, reproducible for a seed).
[<Xunit.Collection("serial")>]
module LongNet.Tests.PositionScalingTests

open System
open Xunit
open FsCheck
open FsCheck.FSharp
open FsCheck.Xunit
open LongNet.Modules

let private yarn scale =
    Yarn
        {
            Scale = scale
            TrainedLength = 64
            Alpha = 1.0
            Beta = 32.0
        }

let private methodsAt (scale: float) =
    [ PlainRope; Interpolation scale; NtkAware scale; DynamicNtk 64; yarn scale ]

let private settings m = { Base = 10000.0; Method = m }

[<Property(MaxTest = 50)>]
let ``scale 1 is plain RoPE for every method`` (half: PositiveInt) (length: PositiveInt) =
    let d = 2 * (1 + half.Get % 8)
    let current = 1 + length.Get % 64 // ≤ trained length: dynamic NTK stays at s = 1
    let positions = Array.init 9 (fun i -> int64 (i * 37))
    let expected = Rope.angles Rope.defaultRope d positions

    methodsAt 1.0
    |> List.forall (fun m ->
        let a = ScaledRope.angles (settings m) d current positions

        Seq.forall2
            (fun (x: float) y -> abs (x - y) <= 1e-12 * max 1.0 (abs y))
            (Seq.cast<float> a)
            (Seq.cast<float> expected))

[<Property(MaxTest = 50)>]
let ``rotated query-key scores depend only on position differences`` (seed: int) (shift: NonNegativeInt) =
    let rng = Random(seed)
    let d = 2 * rng.Next(1, 6)
    let q = Array.init d (fun _ -> rng.NextDouble() - 0.5)
    let k = Array.init d (fun _ -> rng.NextDouble() - 0.5)
    let p, r, c = rng.Next(0, 500), rng.Next(0, 500), shift.Get % 1000
    let scale = 1.0 + 7.0 * rng.NextDouble()

    let score m (pq: int) (pk: int) =
        let a = ScaledRope.angles (settings m) d 200 [| int64 pq; int64 pk |]
        let row i = Array.init (d / 2) (fun j -> a.[i, j])
        Array.fold2 (fun s x y -> s + x * y) 0.0 (ScaledRope.rotateVector (row 0) q) (ScaledRope.rotateVector (row 1) k)

    methodsAt scale
    |> List.forall (fun m -> abs (score m p r - score m (p + c) (r + c)) <= 1e-9)

[<Fact>]
let ``NTK-aware uses base theta times s to the d over d minus 2, keeping the highest frequency and interpolating the lowest``
    ()
    =
    let d, s = 8, 4.0
    let f = ScaledRope.inverseFrequencies (settings (NtkAware s)) d 0
    let theta' = 10000.0 * Math.Pow(s, 8.0 / 6.0)
    Assert.Equal(theta', ScaledRope.ntkBase 10000.0 d s, 6)

    for i in 0 .. d / 2 - 1 do
        Assert.Equal(Math.Pow(theta', -2.0 * float i / float d), f.[i], 15)

    let plain = Rope.inverseFrequencies 10000.0 d
    Assert.Equal(plain.[0], f.[0], 15)
    Assert.Equal(plain.[d / 2 - 1] / s, f.[d / 2 - 1], 15)

[<Fact>]
let ``linear interpolation divides positions by the scale`` () =
    let a = ScaledRope.angles (settings (Interpolation 4.0)) 6 0 [| 40L |]
    let b = Rope.angles Rope.defaultRope 6 [| 10L |]

    for i in 0..2 do
        Assert.Equal(b.[0, i], a.[0, i], 12)

[<Fact>]
let ``dynamic NTK is plain up to the trained length and NTK-aware with s = L over T beyond it`` () =
    let d = 16
    let plain = Rope.inverseFrequencies 10000.0 d
    Assert.Equal<float[]>(plain, ScaledRope.inverseFrequencies (settings (DynamicNtk 100)) d 80)

    Assert.Equal<float[]>(
        ScaledRope.inverseFrequencies (settings (NtkAware 3.0)) d 0,
        ScaledRope.inverseFrequencies (settings (DynamicNtk 100)) d 300
    )

[<Property(MaxTest = 50)>]
let ``YaRN interpolates below alpha rotations, extrapolates above beta, and ramps in between``
    (half: PositiveInt)
    (scaleSeed: PositiveInt)
    =
    let d = 2 * (2 + half.Get % 32)
    let s = 1.0 + float (scaleSeed.Get % 16)
    let y = yarn s
    let f = ScaledRope.inverseFrequencies (settings y) d 0
    let plain = Rope.inverseFrequencies 10000.0 d

    Array.forall2
        (fun (fy: float) (fp: float) ->
            let r = 64.0 * fp / (2.0 * Math.PI)

            if r < 1.0 then abs (fy - fp / s) <= 1e-15
            elif r > 32.0 then abs (fy - fp) <= 1e-15
            else fy >= fp / s - 1e-15 && fy <= fp + 1e-15)
        f
        plain

[<Fact>]
let ``YaRN's attention temperature is 0.1 ln s + 1`` () =
    Assert.Equal(0.1 * Math.Log 8.0 + 1.0, ScaledRope.attentionScale (settings (yarn 8.0)), 15)
    Assert.Equal(1.0, ScaledRope.attentionScale (settings (yarn 1.0)))
    Assert.Equal(1.0, ScaledRope.attentionScale (settings (NtkAware 8.0)))

let private crd =
    {
        MinScale = 1.0
        MaxScale = 8.0
        CycleSteps = 10
        TrainedLength = 128
        MinLength = 16
    }

[<Fact>]
let ``the CRD ceiling grows within a cycle and restarts at each cycle`` () =
    let ceilings = [| for step in 0..29 -> ScaledRope.crdCeiling crd step |]

    for step in 0..28 do
        if (step + 1) % 10 = 0 then
            Assert.Equal(crd.MinScale, ceilings.[step + 1])
            Assert.Equal(crd.MaxScale, ceilings.[step], 12)
        else
            Assert.True(ceilings.[step + 1] > ceilings.[step])

[<Property(MaxTest = 200)>]
let ``CRD draws stay within their bounds and are reproducible for a seed``
    (seed: int)
    (step: NonNegativeInt)
    (sample: NonNegativeInt)
    =
    let draw = ScaledRope.crdDraw crd seed step.Get sample.Get
    let again = ScaledRope.crdDraw crd seed step.Get sample.Get
    let ceiling = ScaledRope.crdCeiling crd step.Get

    draw = again
    && draw.Scale >= crd.MinScale
    && draw.Scale <= ceiling + 1e-12
    && draw.Length >= crd.MinLength
    && draw.Length <= crd.TrainedLength
    && draw.Offset >= 0
    && draw.Gap >= 0
    && draw.Split >= 0
    && draw.Split <= draw.Length
    && float (draw.Offset + draw.Gap + draw.Length)
       <= Math.Max(float draw.Length, Math.Floor(draw.Scale * 128.0))
    && ScaledRope.crdPositions draw =
        Array.init draw.Length (fun i -> int64 (draw.Offset + i + (if i < draw.Split then 0 else draw.Gap)))

[<Fact>]
let ``CRD scales grow on average over a cycle and vary between samples`` () =
    let meanAt step =
        [ for sample in 0..199 -> (ScaledRope.crdDraw crd 7 step sample).Scale ]
        |> List.average

    Assert.True(meanAt 9 > meanAt 5 && meanAt 5 > meanAt 1)
    Assert.True(meanAt 10 < meanAt 9)

    let offsets =
        [ for sample in 0..49 -> (ScaledRope.crdDraw crd 7 9 sample).Offset ]
        |> List.distinct

    Assert.True(offsets.Length > 10)

    // the gap makes distances longer than the sample itself: the widest span reaches well past T
    let spans =
        [
            for sample in 0..49 ->
                let positions = ScaledRope.crdPositions (ScaledRope.crdDraw crd 7 9 sample)
                positions.[positions.Length - 1] - positions.[0] + 1L
        ]

    Assert.True(List.max spans > int64 crd.TrainedLength)

[<Theory>]
[<InlineData(0.5, 8.0, 10, 16, "minScale")>]
[<InlineData(2.0, 1.0, 10, 16, "maxScale")>]
[<InlineData(1.0, 8.0, 0, 16, "cycleSteps")>]
[<InlineData(1.0, 8.0, 10, 0, "minLength")>]
[<InlineData(1.0, 8.0, 10, 500, "minLength")>]
let ``invalid CRD schedules raise errors naming the parameter``
    (minScale: float, maxScale: float, cycleSteps: int, minLength: int, name: string)
    =
    let schedule =
        { crd with
            MinScale = minScale
            MaxScale = maxScale
            CycleSteps = cycleSteps
            MinLength = minLength
        }

    let e =
        Assert.Throws<ArgumentOutOfRangeException>(fun () -> ScaledRope.validateCrd schedule |> ignore)

    Assert.Equal(name, e.ParamName)

[<Fact>]
let ``a non-positive scale is rejected naming the parameter`` () =
    let e =
        Assert.Throws<ArgumentOutOfRangeException>(fun () ->
            ScaledRope.inverseFrequencies (settings (Interpolation 0.0)) 8 0 |> ignore)

    Assert.Equal("scale", e.ParamName)

[<Fact>]
let ``scaled tables at scale 1 equal RoPE's tables and YaRN folds its temperature into them`` () =
    LongNet.Native.ensureLoaded () |> ignore
    let positions = Array.init 13 (fun i -> int64 (i * 5))
    let f64 = TorchSharp.torch.float64
    let cpu = TorchSharp.torch.CPU
    let plain = (Rope.tables (Rope Rope.defaultRope) 6 positions f64 cpu).Value
    let d (a: TorchSharp.torch.Tensor) (b: TorchSharp.torch.Tensor) = (a - b).abs().max().item<float>()

    for m in methodsAt 1.0 do
        let t = ScaledRope.tables (settings m) 6 13 positions f64 cpu
        Assert.True(d t.QueryCos plain.QueryCos < 1e-12 && d t.KeySin plain.KeySin < 1e-12)

    let y = ScaledRope.tables (settings (yarn 4.0)) 6 13 positions f64 cpu
    let expected = 0.1 * Math.Log 4.0 + 1.0
    Assert.Equal(expected, y.QueryCos.[0L, 0L].item<float>(), 12)

/// Fuzzing dilated attention through its public entry points — the F# core (`DilatedConfig.createOrRaise`,
/// `DilatedAttention.forwardUsing`) and the C# facade (`DilatedAttention.Create()…Build().Forward`) — with
/// random configurations, shapes, dtypes, kernels, devices, causality, head-offset modes, magnitudes
/// and deliberate flaws. Property: either a correct result (finite, within the values' convex hull, equal
/// to the dense count-mask oracle within the dtype's tolerance, gradients too) or an ArgumentException
/// that names the flawed parameter — never another exception, a crash, or NaN from finite input.
module LongNet.Proofs.AttentionFuzz

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open LongNet
open LongNet.Tests

/// A deliberate flaw in the configuration, and so the parameter the error must name.
type ConfigFlaw =
    | NoConfigFlaw
    | NoGroups
    | ExtraRate
    | SegmentBelowOne of int
    | RateAboveSegment
    | RateBelowOne of int
    | RepeatedGroup
    | BadScale of float

/// Which of query, key, value a flaw hits.
type Target =
    | Query
    | Key
    | Value

/// A deliberate flaw in the input tensors.
type InputFlaw =
    | NoInputFlaw
    | EmptyDimension of Target * dim: int
    | ThreeDimensional of Target
    | LongerThanQuery of Target
    | OtherDtype of Target
    | IntegerValues of Target
    | NonFinite of Target * value: float

/// One generated call of dilated attention.
type AttentionCase =
    {
        Groups: (int * int) list
        Offsets: HeadOffsets
        Causal: bool
        Scale: float option
        ConfigFlaw: ConfigFlaw
        Batch: int
        Heads: int
        N: int
        HeadDim: int
        Dtype: torch.ScalarType
        Kernel: DilatedAttention.Kernel option
        CheckInputs: bool
        InputFlaw: InputFlaw
        /// q and k multiplied by 30: scores in the thousands (large logits).
        Large: bool
        Gradient: bool
        Seed: int
    }

let private cuda = lazy (torch.cuda.is_available ())

/// The devices to fuzz on: the CPU, and CUDA when this machine has it.
let devices () : torch.Device list =
    [
        torch.CPU
        if cuda.Force() then
            torch.CUDA
    ]

let private dtypes =
    [
        torch.ScalarType.Float32
        torch.ScalarType.Float64
        torch.ScalarType.BFloat16
        torch.ScalarType.Float16
    ]

let private targetGen = Gen.elements [ Query; Key; Value ]

/// Valid groups: 1 to 3 distinct (w, r) with 1 ≤ r ≤ w, w up to 64 and r up to 8.
let groupsGen: Gen<(int * int) list> =
    gen {
        let! count = Gen.choose (1, 3)

        let! groups =
            Gen.listOfLength
                count
                (gen {
                    let! w = Gen.frequency [ 3, Gen.choose (1, 16); 1, Gen.choose (17, 64) ]
                    let! r = Gen.choose (1, min w 8)
                    return w, r
                })

        return List.distinct groups
    }

let private configFlawGen =
    Gen.frequency
        [
            12, Gen.constant NoConfigFlaw
            1, Gen.constant NoGroups
            1, Gen.constant ExtraRate
            1, Gen.choose (-3, 0) |> Gen.map SegmentBelowOne
            1, Gen.constant RateAboveSegment
            1, Gen.choose (-3, 0) |> Gen.map RateBelowOne
            1, Gen.constant RepeatedGroup
            1, Gen.elements [ 0.0; -1.0; nan; infinity; -infinity ] |> Gen.map BadScale
        ]

let private inputFlawGen =
    Gen.frequency
        [
            12, Gen.constant NoInputFlaw
            1, Gen.map2 (fun t d -> EmptyDimension(t, d)) targetGen (Gen.choose (0, 3))
            1, Gen.map ThreeDimensional targetGen
            1, Gen.elements [ Key; Value ] |> Gen.map LongerThanQuery
            1, Gen.elements [ Key; Value ] |> Gen.map OtherDtype
            1, Gen.map IntegerValues targetGen
            2, Gen.map2 (fun t v -> NonFinite(t, v)) targetGen (Gen.elements [ nan; infinity; -infinity ])
        ]

/// Attention cases: a flaw in at most one of configuration and inputs.
let attentionCaseGen: Gen<AttentionCase> =
    gen {
        let! groups = groupsGen
        let! offsets = Gen.elements [ Paper; Blocks ]
        let! causal = Gen.elements [ false; true ]

        let! scale =
            Gen.frequency
                [
                    3, Gen.constant None
                    1, Gen.choose (1, 400) |> Gen.map (fun s -> Some(float s / 100.0))
                ]

        let! flawKind =
            Gen.frequency [ 6, Gen.constant 0; 1, Gen.constant 1; 1, Gen.constant 2 ]

        let! configFlaw =
            if flawKind = 1 then
                configFlawGen
            else
                Gen.constant NoConfigFlaw

        let! inputFlaw =
            if flawKind = 2 then
                inputFlawGen
            else
                Gen.constant NoInputFlaw

        let! batch = Gen.choose (1, 3)
        let! heads = Gen.choose (1, 5)
        let! n = Gen.frequency [ 1, Gen.constant 1; 6, Gen.choose (2, 48) ]
        let! headDim = Gen.frequency [ 1, Gen.constant 1; 4, Gen.choose (2, 9) ]
        let! dtype = Gen.elements dtypes

        let! kernel =
            Gen.elements [ None; Some DilatedAttention.Fused; Some DilatedAttention.Explicit ]

        let! checkInputs = Gen.elements [ false; true ]
        let! large = Gen.frequency [ 3, Gen.constant false; 1, Gen.constant true ]
        let! gradient = Gen.frequency [ 2, Gen.constant false; 1, Gen.constant true ]
        let! seed = Gen.choose (0, Int32.MaxValue)

        return
            {
                Groups = groups
                Offsets = offsets
                Causal = causal
                Scale = scale
                ConfigFlaw = configFlaw
                Batch = batch
                Heads = heads
                N = n
                HeadDim = headDim
                Dtype = dtype
                Kernel = kernel
                CheckInputs = checkInputs
                InputFlaw = inputFlaw
                Large = large
                Gradient = gradient
                Seed = seed
            }
    }

/// The segment lengths, rates and scale handed to the configuration, with the flaw applied.
let configArguments (c: AttentionCase) : int list * int list * float option =
    let ws, rs = List.map fst c.Groups, List.map snd c.Groups
    let w0, r0 = List.head c.Groups

    match c.ConfigFlaw with
    | NoConfigFlaw -> ws, rs, c.Scale
    | NoGroups -> [], [], c.Scale
    | ExtraRate -> ws, rs @ [ 1 ], c.Scale
    | SegmentBelowOne w -> w :: List.tail ws, rs, c.Scale
    | RateAboveSegment -> ws, (w0 + 1) :: List.tail rs, c.Scale
    | RateBelowOne r -> ws, r :: List.tail rs, c.Scale
    | RepeatedGroup -> ws @ [ w0 ], rs @ [ r0 ], c.Scale
    | BadScale s -> ws, rs, Some s

/// The parameter names an error for this configuration flaw may carry.
let configParameters (flaw: ConfigFlaw) : string list =
    match flaw with
    | NoConfigFlaw -> []
    | NoGroups
    | RepeatedGroup -> [ "segmentLengths" ]
    | ExtraRate -> [ "dilationRates" ]
    | SegmentBelowOne _ -> [ "segmentLength" ]
    | RateAboveSegment
    | RateBelowOne _ -> [ "dilationRate" ]
    | BadScale _ -> [ "scale" ]

let private targetName (t: Target) =
    match t with
    | Query -> "query"
    | Key -> "key"
    | Value -> "value"

/// Random q, k, v `[b, h, n, d]` of the case's dtype on `device` (rounded to the dtype), flaw applied.
let inputs (c: AttentionCase) (device: torch.Device) : torch.Tensor * torch.Tensor * torch.Tensor =
    use generator = new torch.Generator(uint64 c.Seed)

    let shapeOf target =
        match c.InputFlaw with
        | EmptyDimension(t, dim) when t = target ->
            [| c.Batch; c.Heads; c.N; c.HeadDim |]
            |> Array.mapi (fun i s -> if i = dim then 0L else int64 s)
        | ThreeDimensional t when t = target -> [| int64 c.Batch; int64 c.Heads; int64 (c.N * c.HeadDim) |]
        | LongerThanQuery t when t = target -> [| int64 c.Batch; int64 c.Heads; int64 (c.N + 1); int64 c.HeadDim |]
        | _ -> [| int64 c.Batch; int64 c.Heads; int64 c.N; int64 c.HeadDim |]

    let dtypeOf target =
        match c.InputFlaw with
        | OtherDtype t when t = target ->
            if c.Dtype = torch.ScalarType.Float64 then
                torch.ScalarType.Float32
            else
                torch.ScalarType.Float64
        | IntegerValues t when t = target -> torch.ScalarType.Int64
        | _ -> c.Dtype

    let make target (magnitude: float) : torch.Tensor =
        use raw: torch.Tensor =
            torch.randn (shapeOf target, dtype = torch.float64, generator = generator)

        use scaled = raw * magnitude

        match c.InputFlaw with
        | NonFinite(t, value) when t = target && scaled.NumberOfElements > 0L ->
            let flat = scaled.view -1L
            flat.[int64 (c.Seed % int flat.NumberOfElements)] <- torch.tensor value
        | _ -> ()

        scaled.to_type(dtypeOf target).``to`` device

    let qk = if c.Large then 30.0 else 1.0
    make Query qk, make Key qk, make Value 1.0

/// The parameter names an error for this input flaw may carry (empty when no error is due).
let inputParameters (c: AttentionCase) : string list =
    match c.InputFlaw with
    | NoInputFlaw -> []
    | NonFinite _ when not c.CheckInputs -> []
    | EmptyDimension(t, _)
    | ThreeDimensional t
    | LongerThanQuery t
    | OtherDtype t
    | IntegerValues t
    | NonFinite(t, _) -> [ targetName t ]

/// Raises unless `e` is an ArgumentException whose ParamName is one of `allowed` and appears in its message.
let expectNamed (allowed: string list) (e: exn) : unit =
    match e with
    | :? ArgumentException as a when List.contains a.ParamName allowed && a.Message.Contains a.ParamName -> ()
    | _ -> failwith $"expected an ArgumentException naming one of {allowed}; got {e.GetType().Name}: {e.Message}"

/// Runs `attempt`, which must raise an ArgumentException naming one of `allowed`; fails with `accepted`
/// when it returns instead.
let expectRefused (allowed: string list) (accepted: string) (attempt: unit -> unit) : unit =
    let raised =
        try
            attempt ()
            None
        with e ->
            Some e

    match raised with
    | None -> failwith accepted
    | Some e -> expectNamed allowed e

/// The largest |a − b| (as float64 on the CPU).
let maxAbs (a: torch.Tensor) (b: torch.Tensor) : float =
    use scope = torch.NewDisposeScope()
    (a.cpu().to_type torch.float64 - b.cpu().to_type torch.float64).abs().max().item<float>()

/// Whether every element is finite.
let allFinite (t: torch.Tensor) : bool =
    use scope = torch.NewDisposeScope()
    t.isfinite().all().item<bool>()

/// The output tolerance against the float64 oracle; None where only finiteness and the hull are checked
/// (half precision with scores in the thousands: a rounding of q or k moves a score by whole units).
let tolerance (dtype: torch.ScalarType) (large: bool) : float option =
    match dtype, large with
    | torch.ScalarType.Float64, _ -> Some 1e-9
    | torch.ScalarType.Float32, false -> Some 1e-4
    | torch.ScalarType.Float32, true -> Some 5e-3
    | torch.ScalarType.Float16, false -> Some 2e-2
    | torch.ScalarType.BFloat16, false -> Some 8e-2
    | _ -> None

/// Checks a correct result: finite, inside the values' hull (or 0 where uncovered), equal to the dense
/// count-mask oracle on the same (rounded) inputs, and — when asked — finite gradients equal to the oracle's.
let checkResult
    (config: DilatedConfig)
    (c: AttentionCase)
    (q: torch.Tensor)
    (k: torch.Tensor)
    (v: torch.Tensor)
    (run: torch.Tensor -> torch.Tensor -> torch.Tensor -> torch.Tensor)
    : unit =
    use scope = torch.NewDisposeScope()
    let finiteInputs = c.InputFlaw = NoInputFlaw

    let leaf (t: torch.Tensor) =
        if c.Gradient then t.detach().requires_grad_ true else t

    let q, k, v = leaf q, leaf k, leaf v
    let out = run q k v

    if out.shape <> q.shape || out.dtype <> q.dtype || out.device_type <> q.device_type then
        failwith $"output {out.shape} {out.dtype} {out.device} for input {q.shape} {q.dtype} {q.device}"

    if finiteInputs then
        if not (allFinite out) then
            failwith "non-finite output from finite inputs"

        let slack = 1e-2 * v.abs().max().to_type(torch.float64).item<float>() + 1e-6

        let low = v.amin([| 2L |], true).clamp_max(0.0).to_type(torch.float64)

        let high = v.amax([| 2L |], true).clamp_min(0.0).to_type(torch.float64)

        let o = out.to_type torch.float64

        if
            (o.lt(low - slack).any().item<bool>())
            || (o.gt(high + slack).any().item<bool>())
        then
            failwith "an output lies outside the convex hull of the values"

        let q64, k64, v64 =
            q.detach().cpu().to_type(torch.float64).requires_grad_ c.Gradient,
            k.detach().cpu().to_type(torch.float64).requires_grad_ c.Gradient,
            v.detach().cpu().to_type(torch.float64).requires_grad_ c.Gradient

        let scale = DilatedConfig.scaleFor config c.HeadDim
        let counts = Oracle.counts config c.Heads c.N
        let expected = Dense.attendWithCounts scale counts q64 k64 v64

        match tolerance c.Dtype c.Large with
        | Some tol ->
            let error = maxAbs out expected

            if not (error <= tol) then
                failwith $"max |out − oracle| = {error:g3} > {tol:g3}"
        | None -> ()

        if c.Gradient then
            use generator = new torch.Generator(uint64 (c.Seed + 1))

            let upstream = torch.randn (q.shape, dtype = torch.float64, generator = generator)

            (out.to_type torch.float64 * upstream.``to`` out.device).sum().backward()
            (expected * upstream).sum().backward()

            for name, (t: torch.Tensor), (o: torch.Tensor) in [ "dq", q, q64; "dk", k, k64; "dv", v, v64 ] do
                if isNull t.grad || not (allFinite t.grad) then
                    failwith $"{name} is missing or not finite"

                // float32 with scores in the thousands is checked for finiteness only: the softmax is
                // nearly one-hot and its gradient a difference of nearly equal float32 numbers.
                match c.Dtype, c.Large with
                | torch.ScalarType.Float64, _
                | torch.ScalarType.Float32, false ->
                    let tol = if c.Dtype = torch.ScalarType.Float64 then 1e-8 else 2e-3
                    let tol = if c.Large then tol * 30.0 else tol
                    let error = maxAbs t.grad o.grad

                    if not (error <= tol * (1.0 + o.grad.abs().max().item<float>())) then
                        failwith $"{name}: max |grad − oracle grad| = {error:g3}"
                | _ -> ()

/// Runs one case through the F# core on `device`.
let checkCore (device: torch.Device) (c: AttentionCase) : unit =
    use scope = torch.NewDisposeScope()
    let ws, rs, scale = configArguments c
    let expectedConfigError = configParameters c.ConfigFlaw

    match
        (try
            Ok(DilatedConfig.createOrRaise ws rs c.Offsets c.Causal scale)
         with e ->
             Error e)
    with
    | Error e when expectedConfigError.IsEmpty -> failwith $"a valid configuration was refused: {e.Message}"
    | Error e -> expectNamed expectedConfigError e
    | Ok _ when not expectedConfigError.IsEmpty -> failwith $"a flawed configuration ({c.ConfigFlaw}) was accepted"
    | Ok config ->
        let q, k, v = inputs c device

        let kernel =
            c.Kernel |> Option.defaultWith (fun () -> DilatedAttention.defaultKernel q)

        let expectedInputError =
            match inputParameters c with
            | [] when kernel = DilatedAttention.Fused && not (Kernels.supports q) -> [ "kernel" ]
            | names -> names

        let run q k v =
            fst (DilatedAttention.forwardUsing kernel c.CheckInputs config q k v)

        if expectedInputError.IsEmpty then
            checkResult config c q k v run
        else
            expectRefused expectedInputError $"flawed inputs ({c.InputFlaw}) were accepted" (fun () ->
                run q k v |> ignore)

/// Runs one case through the C# facade (builder, then Forward) on the CPU and compares it with the core.
let checkFacade (c: AttentionCase) : unit =
    use scope = torch.NewDisposeScope()
    let ws, rs, scale = configArguments c

    let kernel =
        match c.Kernel with
        | None -> LongNet.CSharp.AttentionKernel.Auto
        | Some DilatedAttention.Fused -> LongNet.CSharp.AttentionKernel.Fused
        | Some DilatedAttention.Explicit -> LongNet.CSharp.AttentionKernel.Explicit

    let build () =
        let builder =
            LongNet.CSharp.DilatedAttention
                .Create()
                .Segments(Array.ofList ws)
                .Rates(Array.ofList rs)
                .Causal(c.Causal)
                .HeadOffsets(
                    if c.Offsets = Paper then
                        LongNet.CSharp.HeadOffsets.Paper
                    else
                        LongNet.CSharp.HeadOffsets.Blocks
                )
                .Kernel(kernel)
                .CheckInputs(c.CheckInputs)

        match scale with
        | Some s -> builder.Scale(s).Build()
        | None -> builder.Build()

    let expectedConfigError =
        match c.ConfigFlaw with
        // the facade checks each list as it is given: a group's bad w or r is named by the list
        | SegmentBelowOne _ -> [ "segmentLengths"; "segmentLength" ]
        | RateBelowOne _
        | RateAboveSegment -> [ "rates"; "dilationRate"; "dilationRates" ]
        | ExtraRate -> [ "rates"; "dilationRates" ]
        | NoGroups -> [ "segmentLengths"; "rates" ]
        | flaw -> configParameters flaw

    match
        (try
            Ok(build ())
         with e ->
             Error e)
    with
    | Error e when expectedConfigError.IsEmpty -> failwith $"the facade refused a valid configuration: {e.Message}"
    | Error e -> expectNamed expectedConfigError e
    | Ok _ when not expectedConfigError.IsEmpty ->
        failwith $"the facade accepted a flawed configuration ({c.ConfigFlaw})"
    | Ok attention ->
        let q, k, v = inputs c torch.CPU

        match inputParameters c with
        | [] ->
            let config = DilatedConfig.createOrRaise ws rs c.Offsets c.Causal scale
            checkResult config c q k v (fun q k v -> attention.Forward(q, k, v))
        | expected ->
            expectRefused expected $"the facade accepted flawed inputs ({c.InputFlaw})" (fun () ->
                attention.Forward(q, k, v) |> ignore)

/// The attention fuzz properties: core on every device (the main count) and the C# facade (a quarter).
let tests =
    let arb = Arb.fromGen attentionCaseGen

    testList
        "fuzz: dilated attention gives a correct result or an error naming the parameter"
        [
            for device in devices () do
                testPropertyWithConfig
                    (Cases.config Cases.count)
                    $"F# core on {device}: random configs, shapes, dtypes, kernels, flaws"
                    (Prop.forAll arb (Cases.counted $"core on {device}" (checkCore device)))

            testPropertyWithConfig
                (Cases.config (Cases.share 0.25 20))
                "C# facade (builder, Forward) on the CPU: same cases"
                (Prop.forAll arb (Cases.counted "C# facade" checkFacade))
        ]

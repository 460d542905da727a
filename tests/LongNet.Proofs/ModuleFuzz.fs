/// Fuzzing the modules: `MultiheadDilatedAttention` (random settings, positions, dtypes, train/eval,
/// self-attention and the three-input drop-in) and the `LongNetModel` (random tiny configurations,
/// decoder and encoder, tokens), each with deliberate flaws. Property: a correct result (finite outputs
/// and gradients; causal outputs unchanged by truncating the future; KV-cache decoding equal to the full
/// forward) or an ArgumentException naming the flawed parameter.
module LongNet.Proofs.ModuleFuzz

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open LongNet
open LongNet.Modules
open LongNet.Proofs.AttentionFuzz

/// A deliberate flaw in a layer's settings or its input.
type LayerFlaw =
    | NoLayerFlaw
    | EmbedNotMultipleOfHeads
    | ZeroHeads
    | BadDropout of float
    | BadRopeBase of float
    | WrongEmbedInput
    | TwoDimensionalInput
    | OtherDtypeInput
    | EmptySequenceInput
    | KeyOtherLength

/// One generated multi-head layer call.
type LayerCase =
    {
        Heads: int
        HeadDim: int
        Groups: (int * int) list
        Offsets: HeadOffsets
        Causal: bool
        Position: PositionEncoding
        SubLayerNorm: bool
        Bias: bool
        Dropout: float
        Training: bool
        Dtype: torch.ScalarType
        Batch: int
        N: int
        ThreeInputs: bool
        Flaw: LayerFlaw
        Seed: int
    }

let private positionGen (headDim: int) =
    Gen.frequency
        [
            2, Gen.constant NoPosition
            if headDim % 2 = 0 then
                2, Gen.constant (Rope Rope.defaultRope)

                1,
                Gen.elements [ 512.0; 4.0; 1.0 ]
                |> Gen.map (fun s -> XPos { Rope.defaultXPos with ScaleBase = s })
        ]

let private layerFlawGen =
    Gen.frequency
        [
            14, Gen.constant NoLayerFlaw
            1, Gen.constant EmbedNotMultipleOfHeads
            1, Gen.constant ZeroHeads
            1, Gen.elements [ 1.0; -0.1; nan ] |> Gen.map BadDropout
            1, Gen.elements [ 1.0; 0.5; nan ] |> Gen.map BadRopeBase
            1, Gen.constant WrongEmbedInput
            1, Gen.constant TwoDimensionalInput
            1, Gen.constant OtherDtypeInput
            1, Gen.constant EmptySequenceInput
            1, Gen.constant KeyOtherLength
        ]

let layerCaseGen: Gen<LayerCase> =
    gen {
        let! heads = Gen.choose (1, 4)
        let! headDim = Gen.choose (1, 6)
        let! groups = groupsGen
        let! offsets = Gen.elements [ Paper; Blocks ]
        let! causal = Gen.elements [ false; true ]
        let! position = positionGen headDim
        let! subLayerNorm = Gen.elements [ false; true ]
        let! bias = Gen.elements [ false; true ]
        let! dropout = Gen.elements [ 0.0; 0.0; 0.2 ]
        let! training = Gen.elements [ false; true ]

        let! dtype =
            Gen.elements
                [
                    torch.ScalarType.Float32
                    torch.ScalarType.Float64
                    torch.ScalarType.BFloat16
                ]

        let! batch = Gen.choose (1, 3)
        let! n = Gen.frequency [ 1, Gen.constant 1; 5, Gen.choose (2, 40) ]
        let! threeInputs = Gen.elements [ false; true ]
        let! flaw = layerFlawGen
        let! seed = Gen.choose (0, Int32.MaxValue)

        return
            {
                Heads = heads
                HeadDim = headDim
                Groups = groups
                Offsets = offsets
                Causal = causal
                Position = position
                SubLayerNorm = subLayerNorm
                Bias = bias
                Dropout = dropout
                Training = training
                Dtype = dtype
                Batch = batch
                N = n
                ThreeInputs = threeInputs || flaw = KeyOtherLength
                Flaw = flaw
                Seed = seed
            }
    }

let private settingsOf (c: LayerCase) : AttentionSettings =
    let embed = c.Heads * c.HeadDim

    {
        Embed =
            if c.Flaw = EmbedNotMultipleOfHeads then
                embed + (if c.Heads = 1 then 0 else 1)
            else
                embed
        Heads = if c.Flaw = ZeroHeads then 0 else c.Heads
        Dilated = DilatedConfig.createOrRaise (List.map fst c.Groups) (List.map snd c.Groups) c.Offsets c.Causal None
        Attention = AttentionKind.Dilated
        Position =
            match c.Flaw, c.Position with
            | BadRopeBase b, Rope r -> Rope { r with Base = b }
            | BadRopeBase b, XPos x -> XPos { x with Base = b }
            | _, p -> p
        SubLayerNorm = c.SubLayerNorm
        Dropout =
            match c.Flaw with
            | BadDropout d -> d
            | _ -> c.Dropout
        Bias = c.Bias
        LayerNormEpsilon = 1e-5
        SmearedKeys = false
        KvHeads = c.Heads
        Lora = None
    }

/// The parameters the settings' error may name (empty: the settings are valid).
let private settingsParameters (c: LayerCase) : string list =
    let embedIsMultiple = c.Flaw <> EmbedNotMultipleOfHeads || c.Heads = 1

    match c.Flaw, c.Position with
    | ZeroHeads, _ -> [ "heads" ]
    | EmbedNotMultipleOfHeads, _ when not embedIsMultiple -> [ "heads" ]
    | BadDropout _, _ -> [ "dropout" ]
    | BadRopeBase _, (Rope _ | XPos _) -> [ "ropeBase" ]
    | _ -> []

/// The parameters the forward's error may name (empty: the input is valid).
let private inputParameters (c: LayerCase) : string list =
    let first = if c.ThreeInputs then "query" else "x"

    match c.Flaw with
    | WrongEmbedInput
    | TwoDimensionalInput
    | OtherDtypeInput
    | EmptySequenceInput -> [ first ]
    | KeyOtherLength -> [ "key" ]
    | _ -> []

/// Runs one layer case: construction, forward (and backward), or the named errors.
let checkLayer (c: LayerCase) : unit =
    use scope = torch.NewDisposeScope()
    torch.manual_seed (int64 c.Seed) |> ignore

    match
        (try
            Ok(new MultiheadDilatedAttention("attention", settingsOf c))
         with e ->
             Error e)
    with
    | Error e when (settingsParameters c).IsEmpty -> failwith $"valid settings were refused: {e.Message}"
    | Error e -> expectNamed (settingsParameters c) e
    | Ok _ when not (settingsParameters c).IsEmpty -> failwith $"flawed settings ({c.Flaw}) were accepted"
    | Ok layer ->
        use layer = layer
        layer.``to`` c.Dtype |> ignore

        if c.Training then layer.train () else layer.eval ()

        let e = int64 (c.Heads * c.HeadDim)
        use generator = new torch.Generator(uint64 c.Seed)

        let make (shape: int64[]) dtype =
            torch.randn(shape, dtype = torch.float64, generator = generator).to_type(dtype).requires_grad_(true)

        let shape =
            match c.Flaw with
            | WrongEmbedInput -> [| int64 c.Batch; int64 c.N; e + 1L |]
            | TwoDimensionalInput -> [| int64 c.N; e |]
            | EmptySequenceInput -> [| int64 c.Batch; 0L; e |]
            | _ -> [| int64 c.Batch; int64 c.N; e |]

        let dtype =
            match c.Flaw, c.Dtype with
            | OtherDtypeInput, torch.ScalarType.Float64 -> torch.ScalarType.Float32
            | OtherDtypeInput, _ -> torch.ScalarType.Float64
            | _ -> c.Dtype

        let x = make shape dtype

        let run (x: torch.Tensor) =
            if c.ThreeInputs then
                let keyShape =
                    if c.Flaw = KeyOtherLength then
                        [| int64 c.Batch; int64 c.N + 1L; e |]
                    else
                        x.shape

                layer.Forward(x, make keyShape dtype, make keyShape dtype)
            else
                layer.forward x

        match inputParameters c with
        | [] ->
            let out = run x

            if out.shape <> x.shape || not (allFinite out) then
                failwith $"output {out.shape} finite = {allFinite out} for input {x.shape}"

            out.to_type(torch.float64).square().sum().backward()

            // xPos guarantees finite outputs up to Rope.xposMaxPosition (amplitudes ≤ 1e30), but its
            // gradients carry the amplitudes squared: in float32 they stay finite only while the
            // amplitudes are ≤ 1e8 (found by this fuzz: γ = 1, N = 37 overflowed; see docs/robustness.md).
            let gradientsGuaranteed =
                match c.Position with
                | XPos x -> float c.N <= x.ScaleBase * log 1e8 / -(log (0.4 / 1.4))
                | _ -> true

            if gradientsGuaranteed then
                for struct (name, p) in layer.named_parameters () do
                    if not (isNull p.grad) && not (allFinite p.grad) then
                        failwith $"the gradient of {name} is not finite"

                if not (allFinite x.grad) then
                    failwith "the input's gradient is not finite"

            // Causal and deterministic: the outputs at the first m positions ignore the later inputs.
            if
                c.Causal
                && not c.Training
                && not c.ThreeInputs
                && c.N > 1
                && c.Dtype <> torch.ScalarType.BFloat16
            then
                use _ = torch.no_grad ()
                let m = int64 (c.Seed % (c.N - 1) + 1)
                let head = layer.forward (x.narrow(1L, 0L, m).detach())
                let error = maxAbs head (out.narrow(1L, 0L, m).detach())
                let tol = if c.Dtype = torch.ScalarType.Float64 then 1e-10 else 1e-4

                if not (error <= tol) then
                    failwith $"truncating the future after {m} changed causal outputs by {error:g3}"
        | expected -> expectRefused expected $"a flawed input ({c.Flaw}) was accepted" (fun () -> run x |> ignore)

/// A deliberate flaw in a model's configuration or tokens.
type ModelFlaw =
    | NoModelFlaw
    | TinyVocabulary
    | NoLayers
    | DuplicateGroup
    | TokenPastVocabulary
    | NegativeToken
    | FloatTokens
    | OneDimensionalTokens
    | PastMaxPositions

/// One generated model call.
type ModelCase =
    {
        Vocab: int
        Heads: int
        HeadDim: int
        Layers: int
        FeedForward: FeedForwardKind
        Groups: (int * int) list
        Architecture: Architecture
        Position: PositionEncoding
        SubLayerNorm: bool
        Tied: bool
        Batch: int
        N: int
        Flaw: ModelFlaw
        Seed: int
    }

let modelCaseGen: Gen<ModelCase> =
    gen {
        let! vocab = Gen.choose (2, 40)
        let! heads = Gen.choose (1, 3)
        let! headDim = Gen.elements [ 2; 4 ]
        let! layers = Gen.choose (1, 2)
        let! feedForward = Gen.elements [ SwiGlu; Gelu ]
        let! groups = groupsGen
        let! architecture = Gen.elements [ Decoder; Decoder; Encoder ]
        let! position = positionGen headDim
        let! subLayerNorm = Gen.elements [ false; true ]
        let! tied = Gen.elements [ false; true ]
        let! batch = Gen.choose (1, 3)
        let! n = Gen.choose (1, 32)

        let! flaw =
            Gen.frequency
                [
                    12, Gen.constant NoModelFlaw
                    1, Gen.constant TinyVocabulary
                    1, Gen.constant NoLayers
                    1, Gen.constant DuplicateGroup
                    1, Gen.constant TokenPastVocabulary
                    1, Gen.constant NegativeToken
                    1, Gen.constant FloatTokens
                    1, Gen.constant OneDimensionalTokens
                    1, Gen.constant PastMaxPositions
                ]

        let! seed = Gen.choose (0, Int32.MaxValue)

        return
            {
                Vocab = vocab
                Heads = heads
                HeadDim = headDim
                Layers = layers
                FeedForward = feedForward
                Groups = groups
                Architecture = architecture
                Position = position
                SubLayerNorm = subLayerNorm
                Tied = tied
                Batch = batch
                N = n
                Flaw = flaw
                Seed = seed
            }
    }

let private modelConfigOf (c: ModelCase) : ModelConfig =
    { ModelConfig.defaults with
        VocabSize = if c.Flaw = TinyVocabulary then 1 else c.Vocab
        EmbedDim = c.Heads * c.HeadDim
        Layers = if c.Flaw = NoLayers then 0 else c.Layers
        Heads = c.Heads
        FeedForwardDim = 8
        FeedForward = c.FeedForward
        Groups =
            Groups.ofPairsOrRaise (
                c.Groups
                @ (if c.Flaw = DuplicateGroup then
                       [ List.head c.Groups ]
                   else
                       [])
            )
        Architecture = c.Architecture
        Position = c.Position
        SubLayerNorm = c.SubLayerNorm
        TiedEmbeddings = c.Tied
        MaxPositions = 40
    }

/// Runs one model case: construction, logits, loss gradients, KV-cache decoding, or the named errors.
let checkModel (c: ModelCase) : unit =
    use scope = torch.NewDisposeScope()
    torch.manual_seed (int64 c.Seed) |> ignore

    let configError =
        match c.Flaw with
        | TinyVocabulary -> [ "vocabSize" ]
        | NoLayers -> [ "layers" ]
        | DuplicateGroup -> [ "groups" ]
        | _ -> []

    match
        (try
            Ok(new LongNetModel(modelConfigOf c))
         with e ->
             Error e)
    with
    | Error e when configError.IsEmpty -> failwith $"a valid model configuration was refused: {e.Message}"
    | Error e -> expectNamed configError e
    | Ok _ when not configError.IsEmpty -> failwith $"a flawed model configuration ({c.Flaw}) was accepted"
    | Ok model ->
        use model = model
        model.eval ()
        use generator = new torch.Generator(uint64 c.Seed)
        let n = if c.Flaw = PastMaxPositions then 41 else c.N

        let tokens =
            match c.Flaw with
            | FloatTokens -> torch.rand ([| int64 c.Batch; int64 n |], generator = generator)
            | OneDimensionalTokens -> torch.randint (int64 c.Vocab, [| int64 n |], generator = generator)
            | _ ->
                let t =
                    torch.randint (int64 c.Vocab, [| int64 c.Batch; int64 n |], generator = generator)

                match c.Flaw with
                | TokenPastVocabulary -> t.index_fill_ (1L, torch.tensor [| 0L |], int64 c.Vocab)
                | NegativeToken -> t.index_fill_ (1L, torch.tensor [| 0L |], -1L)
                | _ -> t

        match c.Flaw with
        | NoModelFlaw ->
            let logits = model.forward tokens

            if
                logits.shape <> [| int64 c.Batch; int64 n; int64 c.Vocab |]
                || not (allFinite logits)
            then
                failwith $"logits {logits.shape}, finite = {allFinite logits}"

            let loss =
                torch.nn.functional.cross_entropy (logits.reshape (-1L, int64 c.Vocab), tokens.reshape -1L)

            loss.backward ()

            for struct (name, p) in model.named_parameters () do
                if not (isNull p.grad) && not (allFinite p.grad) then
                    failwith $"the gradient of {name} is not finite"

            if c.Architecture = Decoder && n > 1 then
                use _ = torch.no_grad ()
                use cache = model.NewCache()
                model.Prefill(tokens.narrow (1L, 0L, int64 (n - 1)), cache) |> ignore
                let step = model.Step(tokens.select (1L, int64 (n - 1)), cache)
                let error = maxAbs step (logits.select(1L, int64 (n - 1)).detach())

                if not (error <= 1e-4) then
                    failwith $"KV-cache decoding differs from the full forward by {error:g3}"
        | _ ->
            expectRefused [ "tokens" ] $"flawed tokens ({c.Flaw}) were accepted" (fun () ->
                model.forward tokens |> ignore)

/// The module fuzz properties: layers (half the main count) and models (a twentieth).
let tests =
    testList
        "fuzz: modules give a correct result or an error naming the parameter"
        [
            testPropertyWithConfig
                (Cases.config (Cases.share 0.5 40))
                "MultiheadDilatedAttention: random settings, positions, dtypes, modes, flaws"
                (Prop.forAll (Arb.fromGen layerCaseGen) (Cases.counted "multi-head layer" checkLayer))

            testPropertyWithConfig
                (Cases.config (Cases.share 0.05 15))
                "LongNetModel: random tiny configurations and tokens, decoder and encoder, flaws"
                (Prop.forAll (Arb.fromGen modelCaseGen) (Cases.counted "model" checkModel))
        ]

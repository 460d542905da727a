/// CASM select-and-merge attention: equals dense attention when every block is kept (with and without
/// RoPE, renumbered or not), is causal, selects the truly top-scoring blocks, costs a number of scores
/// linear in n, is differentiable, and rejects invalid configs naming the parameter.
/// Serial: torch Scalars must not be finalized by a GC from another test thread mid-call.
[<Xunit.Collection("serial")>]
module LongNet.Tests.CasmTests

open System
open Xunit
open FsCheck
open FsCheck.FSharp
open FsCheck.Xunit
open TorchSharp
open LongNet
open LongNet.Modules
open LongNet.Casm

let private init =
    lazy
        (Native.ensureLoaded () |> ignore
         torch.set_num_threads 1)

/// A random small attention problem and CASM config.
type CasmCase =
    {
        Batch: int
        Heads: int
        HeadDim: int
        Length: int
        Config: SelectMergeConfig
        Seed: int
    }

let private caseGen =
    gen {
        let! batch = Gen.choose (1, 2)
        let! heads = Gen.choose (1, 3)
        let! halfDim = Gen.choose (1, 3)
        let! length = Gen.choose (1, 23)
        let! blockSize = Gen.choose (1, 5)
        let! topK = Gen.choose (0, 4)
        let! mergeFactor = Gen.choose (1, 3)
        let! sink = Gen.elements [ false; true ]
        let! causal = Gen.elements [ false; true ]
        let! renumber = Gen.elements [ false; true ]
        let! localBlocks = Gen.choose (0, 2)

        let! selection =
            Gen.elements [ BlockSelection.Correlation; BlockSelection.Trainable ]

        let! seed = Gen.choose (0, 1_000_000)

        return
            {
                Batch = batch
                Heads = heads
                HeadDim = 2 * halfDim
                Length = length
                Config =
                    { SelectMergeConfig.create blockSize topK mergeFactor sink causal renumber with
                        LocalBlocks = localBlocks
                        Selection = selection
                    }
                Seed = seed
            }
    }

/// Arbitraries of this file.
type Arbitraries =
    static member CasmCase() = Arb.fromGen caseGen

let private inputs (c: CasmCase) =
    torch.manual_seed (int64 c.Seed) |> ignore
    let shape = [| int64 c.Batch; int64 c.Heads; int64 c.Length; int64 c.HeadDim |]

    torch.randn (shape, dtype = torch.float64),
    torch.randn (shape, dtype = torch.float64),
    torch.randn (shape, dtype = torch.float64)

let private maxDiff (a: torch.Tensor) (b: torch.Tensor) = (a - b).abs().max().item<float>()

/// The case's config keeping every block, with the paper's selection (no score bias).
let private keepAll (c: CasmCase) =
    { c.Config with
        TopK = SelectMergePlan.blockCount c.Config c.Length
        Selection = BlockSelection.Correlation
    }

[<Property(Arbitrary = [| typeof<Arbitraries> |], MaxTest = 30)>]
let ``with top-k at least the block count and no RoPE it equals dense attention`` (c: CasmCase) =
    init.Force()
    use _scope = torch.NewDisposeScope()
    let q, k, v = inputs c
    let scale = 1.0 / sqrt (float c.HeadDim)

    let config =
        { keepAll c with
            RenumberPositions = false
        }

    let out, lse = SelectMerge.attend config None scale q k v
    let expected, expectedLse = Dense.attend scale config.Causal q k v
    let worst = max (maxDiff out expected) (maxDiff lse expectedLse)
    worst <= 1e-10 |> Prop.label $"max |Δ| = {worst:E3}"

[<Property(Arbitrary = [| typeof<Arbitraries> |], MaxTest = 30)>]
let ``with every block kept, RoPE at original or renumbered positions equals dense RoPE attention`` (c: CasmCase) =
    init.Force()
    use _scope = torch.NewDisposeScope()
    let q, k, v = inputs c
    let scale = 1.0 / sqrt (float c.HeadDim)
    let config = keepAll c
    let out, _ = SelectMerge.attend config (Some Rope.defaultRope) scale q k v

    let tables =
        Rope.tables (Rope Rope.defaultRope) c.HeadDim (Array.init c.Length int64) torch.float64 torch.CPU

    let qr, kr = Rope.apply tables q k
    let expected, _ = Dense.attend scale config.Causal qr kr v
    let worst = maxDiff out expected
    worst <= 1e-10 |> Prop.label $"max |Δ| = {worst:E3}"

[<Property(Arbitrary = [| typeof<Arbitraries> |], MaxTest = 30)>]
let ``causal: changing future keys and values never changes earlier outputs`` (c: CasmCase) =
    init.Force()
    use _scope = torch.NewDisposeScope()
    let config = { c.Config with Causal = true }
    let q, k, v = inputs c
    let cut = c.Seed % c.Length
    let future = int64 (c.Length - cut - 1)

    let replace (x: torch.Tensor) =
        if future = 0L then
            x
        else
            torch.cat (
                [|
                    x.narrow (2L, 0L, int64 cut + 1L)
                    torch.randn_like (x.narrow (2L, int64 cut + 1L, future)) * 3.0
                |],
                2L
            )

    let rope = if c.Seed % 2 = 0 then Some Rope.defaultRope else None
    let scale = 1.0 / sqrt (float c.HeadDim)
    let before, _ = SelectMerge.attend config rope scale q k v
    let after, _ = SelectMerge.attend config rope scale q (replace k) (replace v)
    let n = int64 cut + 1L
    let worst = maxDiff (before.narrow (2L, 0L, n)) (after.narrow (2L, 0L, n))
    worst <= 1e-12 |> Prop.label $"outputs ≤ {cut} moved by {worst:E3}"

[<Property(Arbitrary = [| typeof<Arbitraries> |], MaxTest = 30)>]
let ``selection keeps the own and local blocks, the sink, and exactly the top-k scoring earlier or other blocks``
    (c: CasmCase)
    =
    init.Force()
    use _scope = torch.NewDisposeScope()
    let cfg = c.Config
    let q, k, _ = inputs c
    let qBlocks, valid = SelectMerge.splitBlocks cfg.BlockSize q
    let kBlocks, _ = SelectMerge.splitBlocks cfg.BlockSize k
    let qGroups, qValid = SelectMerge.groupBlocks cfg.MergeFactor qBlocks valid

    let scores =
        SelectMerge.correlationScores (SelectMerge.maskedMean qGroups qValid) (SelectMerge.blockSummaries kBlocks valid)

    let selection = SelectMerge.selectBlocks cfg scores
    let nb = SelectMerge.splitBlocks cfg.BlockSize q |> snd |> fun t -> int t.shape.[0]
    let groups = int scores.shape.[2]
    let flat = scores.contiguous().data<float>().ToArray()
    // brute force: block means from scratch, ranks by "how many candidates beat me"
    let qa = q.contiguous().data<float>().ToArray()
    let ka = k.contiguous().data<float>().ToArray()
    let d, n, b, m = c.HeadDim, c.Length, cfg.BlockSize, cfg.MergeFactor

    let mean (a: float[]) (bh: int) (rows: int[]) =
        Array.init d (fun e -> (rows |> Array.sumBy (fun r -> a.[(bh * n + r) * d + e])) / float rows.Length)

    let failures =
        [
            for bh in 0 .. c.Batch * c.Heads - 1 do
                for g in 0 .. groups - 1 do
                    let own = [| g * m .. min nb (g * m + m) - 1 |]
                    let qm = mean qa bh [| g * m * b .. min n ((g * m + m) * b) - 1 |]

                    let score j =
                        let km = mean ka bh [| j * b .. min n ((j + 1) * b) - 1 |]
                        Array.fold2 (fun s x y -> s + x * y) 0.0 qm km

                    let sink = cfg.Sink && not (Array.contains 0 own)
                    let limit = if cfg.Causal then g * m else nb
                    let local = [| max 0 (g * m - cfg.LocalBlocks) .. g * m - 1 |]

                    let cands =
                        [| 0 .. limit - 1 |]
                        |> Array.filter (fun j ->
                            not (Array.contains j own)
                            && not (Array.contains j local)
                            && not (sink && j = 0))

                    let beats i j =
                        score i > score j || (score i = score j && i < j)

                    let top =
                        cands
                        |> Array.filter (fun j -> (cands |> Array.filter (fun i -> beats i j)).Length < cfg.TopK)

                    let expected =
                        Array.concat [ own; local; (if sink then [| 0 |] else [||]); top ]
                        |> Array.distinct
                        |> Array.sort

                    let got = selection.[bh * groups + g]

                    for j in 0 .. nb - 1 do
                        if abs (flat.[(bh * groups + g) * nb + j] - score j) > 1e-9 then
                            yield $"score ({bh},{g},{j})"

                    if got <> expected then
                        yield $"group ({bh},{g}): got %A{got}, expected %A{expected}"
        ]

    List.isEmpty failures |> Prop.label (String.concat "; " failures)

[<Fact>]
let ``ties go to the lower block index`` () =
    let config = SelectMergeConfig.create 2 2 1 false false false
    let picked = SelectMergePlan.select config 6 5 [| 1.0; 3.0; 3.0; 1.0; 3.0; 0.0 |]
    Assert.Equal<int[]>([| 1; 2; 5 |], picked)

[<Property(Arbitrary = [| typeof<Arbitraries> |], MaxTest = 100)>]
let ``the pair count is linear in n for fixed block size, top-k and merge factor`` (c: CasmCase) =
    let cfg = c.Config
    let b, m, k = int64 cfg.BlockSize, int64 cfg.MergeFactor, int64 cfg.TopK
    let perRow = (m + int64 cfg.LocalBlocks + k + 1L) * b

    [ c.Length; 10 * c.Length; 1000 * c.Length ]
    |> List.forall (fun n ->
        let pairs = SelectMergePlan.pairCount cfg n
        pairs <= (int64 n + m * b) * perRow && pairs >= int64 n * b)

[<Fact>]
let ``doubling n doubles the pair count when every group has k candidates`` () =
    let config = SelectMergeConfig.create 4 2 1 false false false
    Assert.Equal(48_000L, SelectMergePlan.pairCount config 4000)
    Assert.Equal(2L * SelectMergePlan.pairCount config 4000, SelectMergePlan.pairCount config 8000)

[<Fact>]
let ``gradients flow to queries, keys and values`` () =
    init.Force()
    use _scope = torch.NewDisposeScope()
    let config = SelectMergeConfig.create 3 1 2 true true true

    let make () =
        torch.randn ([| 1L; 2L; 11L; 4L |], dtype = torch.float64, requires_grad = true)

    let q, k, v = make (), make (), make ()
    let out, _ = SelectMerge.attend config (Some Rope.defaultRope) 0.5 q k v
    out.sum().backward()

    for x in [ q; k; v ] do
        Assert.True(x.grad.abs().sum().item<float>() > 0.0)

[<Theory>]
[<InlineData(0, 1, 1, "blockSize")>]
[<InlineData(2, -1, 1, "topK")>]
[<InlineData(2, 1, 0, "mergeFactor")>]
let ``invalid configs raise errors naming the parameter`` (blockSize: int, topK: int, mergeFactor: int, name: string) =
    let e =
        Assert.Throws<ArgumentOutOfRangeException>(fun () ->
            SelectMergeConfig.create blockSize topK mergeFactor false true false |> ignore)

    Assert.Equal(name, e.ParamName)
    Assert.Contains(name, e.Message)

[<Property(Arbitrary = [| typeof<Arbitraries> |], MaxTest = 30)>]
let ``renumbered positions stay below the merged length and a query shares its number with its own key`` (c: CasmCase) =
    init.Force()
    use _scope = torch.NewDisposeScope()
    let cfg = c.Config
    let q, k, _ = inputs c
    let qBlocks, valid = SelectMerge.splitBlocks cfg.BlockSize q
    let kBlocks, _ = SelectMerge.splitBlocks cfg.BlockSize k
    let qGroups, qValid = SelectMerge.groupBlocks cfg.MergeFactor qBlocks valid

    let scores =
        SelectMerge.correlationScores (SelectMerge.maskedMean qGroups qValid) (SelectMerge.blockSummaries kBlocks valid)

    let selection = SelectMerge.selectBlocks cfg scores
    let slots = selection |> Array.map Array.length |> Array.max
    let groups = int qGroups.shape.[2]

    let kOrig, kValid =
        SelectMerge.mergedKeyLayout
            selection
            slots
            cfg.BlockSize
            c.Length
            [| int64 selection.Length; int64 (slots * cfg.BlockSize) |]
            torch.CPU

    let qOrig, qNum =
        SelectMerge.groupQueryLayout cfg selection groups [| int64 selection.Length; qGroups.shape.[3] |] torch.CPU

    let ko, kv = kOrig.data<int64>().ToArray(), kValid.data<bool>().ToArray()

    let qo, qn = qOrig.data<int64>().ToArray(), qNum.data<int64>().ToArray()
    let width, rows = slots * cfg.BlockSize, int qGroups.shape.[3]

    let bound =
        int64 ((cfg.MergeFactor + cfg.LocalBlocks + cfg.TopK + 1) * cfg.BlockSize)

    // a key's renumbered position is its slot index in the merged sequence: 0 … width − 1
    let mutable ok = int64 width <= bound

    for g in 0 .. selection.Length - 1 do
        for r in 0 .. rows - 1 do
            let pos = qo.[g * rows + r]

            if pos < int64 c.Length then
                let own =
                    [| 0 .. width - 1 |]
                    |> Array.find (fun j -> kv.[g * width + j] && ko.[g * width + j] = pos)

                ok <- ok && qn.[g * rows + r] = int64 own

    ok

[<Property(Arbitrary = [| typeof<Arbitraries> |], MaxTest = 20)>]
let ``with every block kept, gradients equal dense attention's`` (c: CasmCase) =
    init.Force()
    use _scope = torch.NewDisposeScope()
    let q0, k0, v0 = inputs c
    let scale = 1.0 / sqrt (float c.HeadDim)

    let config =
        { keepAll c with
            RenumberPositions = false
        }

    let grads (f: torch.Tensor -> torch.Tensor -> torch.Tensor -> torch.Tensor) =
        let q, k, v =
            q0.detach().requires_grad_ true, k0.detach().requires_grad_ true, v0.detach().requires_grad_ true

        (f q k v * torch.cos (q0 + v0)).sum().backward()
        [ q.grad; k.grad; v.grad ]

    let casm = grads (fun q k v -> fst (SelectMerge.attend config None scale q k v))
    let dense = grads (fun q k v -> fst (Dense.attend scale config.Causal q k v))
    let worst = List.map2 maxDiff casm dense |> List.max
    worst <= 1e-10 |> Prop.label $"max |Δ grad| = {worst:E3}"

/// The query-group summaries (plain means of each group's rows) and key-block summaries of a case.
let private summariesOf (c: CasmCase) (q: torch.Tensor) (k: torch.Tensor) =
    let qBlocks, valid = SelectMerge.splitBlocks c.Config.BlockSize q
    let kBlocks, _ = SelectMerge.splitBlocks c.Config.BlockSize k
    let qGroups, qValid = SelectMerge.groupBlocks c.Config.MergeFactor qBlocks valid
    SelectMerge.maskedMean qGroups qValid, SelectMerge.blockSummaries kBlocks valid

[<Property(Arbitrary = [| typeof<Arbitraries> |], MaxTest = 60)>]
let ``the chunked selection equals the whole-matrix selection for any chunk size`` (c: CasmCase) (chunkScores: byte) =
    init.Force()
    use _scope = torch.NewDisposeScope()
    let cfg = c.Config
    let q, k, _ = inputs c
    let summaries, keySummaries = summariesOf c q k

    let whole =
        SelectMerge.selectBlocks cfg (SelectMerge.correlationScores summaries keySummaries)
    // from one score per chunk (one group at a time) upwards
    let chunked =
        SelectMerge.selectInChunks cfg (1L + int64 chunkScores) summaries keySummaries

    Assert.Equal(whole.Length, chunked.Length)

    for i in 0 .. whole.Length - 1 do
        Assert.Equal<int[]>(whole.[i], chunked.[i])

/// The case's config keeping every block with the trainable selection, no RoPE renumbering.
let private trainableOverAll (c: CasmCase) =
    { c.Config with
        TopK = SelectMergePlan.blockCount c.Config c.Length
        Selection = BlockSelection.Trainable
        RenumberPositions = false
    }

[<Property(Arbitrary = [| typeof<Arbitraries> |], MaxTest = 30)>]
let ``trainable selection over every block is dense attention with each chosen block biased by its log-softmax score``
    (c: CasmCase)
    =
    init.Force()
    use _scope = torch.NewDisposeScope()
    let q, k, v = inputs c
    let scale = 1.0 / sqrt (float c.HeadDim)
    let cfg = trainableOverAll c
    let out, _ = SelectMerge.attend cfg None scale q k v
    // the reference: scores from the summaries, the bias written out per (query, key) position
    let n, b, m = c.Length, cfg.BlockSize, cfg.MergeFactor
    let nb = SelectMergePlan.blockCount cfg n
    let qBlocks, valid = SelectMerge.splitBlocks b q
    let kBlocks, _ = SelectMerge.splitBlocks b k
    let qGroups, qValid = SelectMerge.groupBlocks m qBlocks valid
    let groups = int qGroups.shape.[2]

    let summaries =
        if cfg.Causal then
            SelectMerge.causalGroupSummaries b m groups q
        else
            SelectMerge.maskedMean qGroups qValid

    let scores =
        SelectMerge.correlationScores summaries (SelectMerge.blockSummaries kBlocks valid)

    let s = scores.contiguous().data<float>().ToArray()
    let bias = Array.zeroCreate<float>(c.Batch * c.Heads * n * n)

    for bh in 0 .. c.Batch * c.Heads - 1 do
        for g in 0 .. groups - 1 do
            let chosen = SelectMergePlan.candidates cfg nb g
            let score j = s.[(bh * groups + g) * nb + j] * scale

            if chosen.Length > 0 then
                let top = chosen |> Array.map score |> Array.max

                let lse = top + log (chosen |> Array.sumBy (fun j -> exp (score j - top)))

                for i in g * m * b .. min n ((g + 1) * m * b) - 1 do
                    for j in chosen do
                        for key in j * b .. min n ((j + 1) * b) - 1 do
                            bias.[(bh * n + i) * n + key] <- score j - lse

    let biasT =
        torch.tensor(bias, dtype = torch.float64).reshape(int64 c.Batch, int64 c.Heads, int64 n, int64 n)

    let logits = q.matmul (k.transpose (-2L, -1L)) * scale + biasT

    let logits =
        if cfg.Causal then
            logits.masked_fill (torch.ones(int64 n, int64 n, dtype = torch.ScalarType.Bool).triu 1L, -1e300)
        else
            logits

    let expected = logits.softmax(-1L).matmul v
    let worst = maxDiff out expected
    worst <= 1e-10 |> Prop.label $"max |Δ| = {worst:E3}"

[<Property(Arbitrary = [| typeof<Arbitraries> |], MaxTest = 15)>]
let ``trainable selection: autograd gradients match finite differences, so the loss reaches the block scores``
    (c: CasmCase)
    =
    init.Force()
    use _scope = torch.NewDisposeScope()
    let q0, k0, v0 = inputs c
    let scale = 1.0 / sqrt (float c.HeadDim)
    let cfg = trainableOverAll c
    let weights = torch.cos (q0 + 2.0 * v0)

    let loss (q: torch.Tensor) (k: torch.Tensor) =
        (fst (SelectMerge.attend cfg None scale q k v0) * weights).sum()

    let q, k = q0.detach().requires_grad_ true, k0.detach().requires_grad_ true
    (loss q k).backward()
    let gq, gk = q.grad.data<float>().ToArray(), k.grad.data<float>().ToArray()
    let eps = 1e-6

    let numeric (which: int) (i: int) =
        use _ = torch.no_grad ()

        let bump (delta: float) =
            let x = (if which = 0 then q0 else k0).clone()
            x.view(-1L).[int64 i] <- torch.tensor (x.view(-1L).[int64 i].item<float>() + delta, dtype = torch.float64)

            let value = if which = 0 then loss x k0 else loss q0 x

            value.item<float>()

        (bump eps - bump -eps) / (2.0 * eps)

    let size = int (q0.numel ())

    let worst =
        [
            for i in 0..7 .. size - 1 -> max (abs (numeric 0 i - gq.[i])) (abs (numeric 1 i - gk.[i]))
        ]
        |> List.max

    worst <= 1e-6 |> Prop.label $"max |autograd − numeric| = {worst:E3}"

[<Property(Arbitrary = [| typeof<Arbitraries> |], MaxTest = 40)>]
let ``without autograd, attention a few query groups at a time equals all groups at once``
    (c: CasmCase)
    (budget: byte)
    =
    init.Force()
    use _ = torch.no_grad ()
    use _scope = torch.NewDisposeScope()
    let q, k, v = inputs c
    let scale = 1.0 / sqrt (float c.HeadDim)
    let rotation = Some(SelectMerge.ropeRotation Rope.defaultRope c.HeadDim)

    let whole, wholeLse =
        SelectMerge.attendRotatedChunked Int64.MaxValue c.Config rotation scale q k v
    // from one group per chunk up to a few
    let part, partLse =
        SelectMerge.attendRotatedChunked (int64 budget + 1L) c.Config rotation scale q k v

    let worst = max (maxDiff whole part) (maxDiff wholeLse partLse)
    worst <= 1e-12 |> Prop.label $"max |Δ| = {worst:E3}"

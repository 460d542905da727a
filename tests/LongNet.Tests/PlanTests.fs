/// The plan's index math against brute force from the definition: attended pairs, coverage, the
/// attention graph's diameter (fast bit-parallel BFS vs plain BFS); linear cost; logarithmic path length.
module LongNet.Tests.PlanTests

open System
open System.Collections.Generic
open Xunit
open FsCheck.Xunit
open LongNet
open LongNet.Tests.Generators

/// Whether head h of group g lets query q see key k, straight from docs/concepts.md.
let private sees (config: DilatedConfig) (heads: int) (n: int) (g: Group) (h: int) (q: int) (k: int) =
    let w, r = g.SegmentLength, g.DilationRate
    let s = HeadOffsets.offset config.Offsets heads r h

    let kept p =
        p < n && (p % w) >= s && ((p % w) - s) % r = 0

    q / w = k / w && kept q && kept k && (not config.Causal || k <= q)

/// Adjacency of the attention graph from the definition: edge k → q when some head of some group lets q see k.
let private adjacency (config: DilatedConfig) (heads: int) (n: int) =
    Array.init n (fun k ->
        [|
            for q in 0 .. n - 1 do
                if
                    q <> k
                    && config.Groups
                       |> List.exists (fun g ->
                           List.exists
                               (fun h ->
                                   sees config heads n g h q k
                                   || (not config.Causal && sees config heads n g h k q))
                               [ 0 .. heads - 1 ])
                then
                    yield q
        |])

/// Diameter by one plain BFS per source over the adjacency (None when some required pair is unreachable).
let private bruteDiameter (config: DilatedConfig) (heads: int) (n: int) =
    let next = adjacency config heads n

    let eccentricity source =
        let distance = Array.create n -1
        distance.[source] <- 0
        let queue = Queue [ source ]

        while queue.Count > 0 do
            let u = queue.Dequeue()

            for v in next.[u] do
                if distance.[v] < 0 then
                    distance.[v] <- distance.[u] + 1
                    queue.Enqueue v

        let targets =
            if config.Causal then
                [ source .. n - 1 ]
            else
                [ 0 .. n - 1 ]

        if targets |> List.exists (fun t -> distance.[t] < 0) then
            None
        else
            Some(targets |> List.map (fun t -> distance.[t]) |> List.max)

    [ 0 .. n - 1 ]
    |> List.map eccentricity
    |> List.fold (fun acc e -> Option.map2 max acc e) (Some 0)

[<Property(Arbitrary = [| typeof<Cases> |], MaxTest = 200)>]
let ``attended pairs equal a brute-force count over all query-key pairs`` (c: Case) =
    let brute =
        c.Config.Groups
        |> List.sumBy (fun g ->
            [
                for h in 0 .. c.Heads - 1 do
                    for q in 0 .. c.N - 1 do
                        for k in 0 .. c.N - 1 do
                            if sees c.Config c.Heads c.N g h q k then
                                1L
            ]
            |> List.sum)

    let plan = Plan.summarise c.Config c.N c.Heads 4 false
    brute = plan.Pairs

[<Property(Arbitrary = [| typeof<Cases> |], MaxTest = 200)>]
let ``uncovered pairs equal a brute-force count of (head, position) pairs no group keeps`` (c: Case) =
    let kept g h p = sees c.Config c.Heads c.N g h p p

    let brute =
        [
            for h in 0 .. c.Heads - 1 do
                for p in 0 .. c.N - 1 do
                    if not (c.Config.Groups |> List.exists (fun g -> kept g h p)) then
                        1L
        ]
        |> List.sum

    brute = Plan.uncoveredPairs c.Config c.Heads c.N

[<Property(Arbitrary = [| typeof<Cases> |], MaxTest = 150)>]
let ``the bit-parallel BFS diameter equals a plain BFS from every node`` (c: Case) =
    let n = min c.N 40
    Plan.diameter (Plan.Dilated(c.Config, c.Heads)) n = bruteDiameter c.Config c.Heads n

[<Property(Arbitrary = [| typeof<Cases> |], MaxTest = 100)>]
let ``pairs per token stay bounded as N grows`` (c: Case) =
    // For fixed groups, pairs(N)/N ≤ Σ_g Σ_j w_g/r_g² rounded up per segment: bounded by Σ_g H·(w_g/r_g + 1).
    let bound =
        c.Config.Groups
        |> List.sumBy (fun g -> float c.Heads * (float g.SegmentLength / float g.DilationRate + 1.0))

    [ c.N; 2 * c.N; 4 * c.N; 8 * c.N; 64 * c.N ]
    |> List.forall (fun n -> (Plan.summarise c.Config n c.Heads 4 false).PairsPerToken <= bound)

[<Fact>]
let ``non-causal pairs are exactly sum over groups and heads of N·w/r² when the sizes divide`` () =
    let config = configOf [ 16, 1; 32, 2; 64, 4; 64, 8 ] Paper false None
    let heads = 8

    for n in [ 64; 128; 4096; 65536 ] do
        let expected =
            config.Groups
            |> List.sumBy (fun g ->
                int64 heads * int64 n * int64 g.SegmentLength
                / int64 (g.DilationRate * g.DilationRate))

        Assert.Equal(expected, (Plan.summarise config n heads 64 false).Pairs)

/// The paper's geometric configuration w_i = 64·2^i, r_i = 2^i up to the first w ≥ N.
let private geometric (n: int) (causal: bool) =
    let groups =
        Seq.initInfinite (fun i -> 64 <<< i, 1 <<< i)
        |> Seq.takeWhile (fun (w, _) -> w < 2 * n)
        |> Seq.filter (fun (w, _) -> w / 2 < n)
        |> List.ofSeq

    configOf groups Paper causal None

[<Theory>]
[<InlineData(1024, 3)>]
[<InlineData(4096, 3)>]
[<InlineData(16384, 4)>]
let ``geometric configurations reach every token in a logarithmic number of hops`` (n: int, hops: int) =
    // Measured independently: w0 = 64, alpha = 2, 8 heads, paper offsets, non-causal.
    Assert.Equal(Some hops, Plan.diameter (Plan.Dilated(geometric n false, 8)) n)

[<Fact>]
let ``the geometric diameter grows by at most one hop per fourfold N while a sliding window grows linearly`` () =
    let ns = [ 256; 1024; 4096 ]

    let dilated =
        ns
        |> List.map (fun n -> (Plan.diameter (Plan.Dilated(geometric n false, 8)) n).Value)

    let window =
        ns
        |> List.map (fun n -> (Plan.diameter (Plan.SlidingWindow(64, false)) n).Value)

    for a, b in List.pairwise dilated do
        Assert.InRange(b - a, 0, 1)

    for (n, d) in List.zip ns window do
        Assert.InRange(d, n / 64 - 2, n / 64 + 2) // about N/w hops

    Assert.True(List.last window > 10 * List.last dilated)

[<Fact>]
let ``causal dilated attention never carries a token to its right neighbour across a w0 boundary`` () =
    // A causal path from k to q only visits positions in [k, q], so 63 → 64 needs a direct edge: the
    // same block of some group. Consecutive positions differ mod every r ≥ 2, and the only r = 1 group
    // (w = 64) puts them in different segments — so the causal diameter of the geometric config is
    // infinite, while 63 still reaches 65 (same offset in the (128, 2) group).
    let config = geometric 1024 true
    Assert.Equal(None, Plan.diameter (Plan.Dilated(config, 8)) 1024)

    let reaches g =
        Plan.covers config 8 g 1 63L && Plan.covers config 8 g 1 65L

    Assert.True(config.Groups |> List.exists (fun g -> g.SegmentLength = 128 && reaches g))

[<Fact>]
let ``segment-only attention never connects two segments`` () =
    Assert.Equal(None, Plan.diameter (Plan.Dilated(configOf [ 64, 1 ] Paper false None, 8)) 1024)
    Assert.Equal(None, Plan.diameter (Plan.Dilated(configOf [ 64, 1 ] Paper true None, 8)) 1024)

[<Fact>]
let ``one dense group has diameter one and a single token has diameter zero`` () =
    Assert.Equal(Some 1, Plan.diameter (Plan.Dilated(configOf [ 100, 1 ] Paper false None, 2)) 50)
    Assert.Equal(Some 0, Plan.diameter (Plan.Dilated(configOf [ 8, 2 ] Paper false None, 1)) 1)

[<Fact>]
let ``a rate above the head count leaves positions uncovered and the plan says how many`` () =
    // (w = 8, r = 4), 2 heads, paper offsets 0 and 1: local positions 2, 3, 6, 7 are kept by no head.
    let plan = Plan.summarise (configOf [ 8, 4 ] Paper false None) 16 2 4 false
    // head 0 keeps 0, 4, 8, 12 and head 1 keeps 1, 5, 9, 13: 12 of 16 positions uncovered per head
    Assert.Equal(24L, plan.UncoveredPairs)
    Assert.Equal(0.75, plan.UncoveredShare)

[<Fact>]
let ``blocks offsets differ from paper offsets`` () =
    let offsets mode =
        Array.init 4 (HeadOffsets.offset mode 4 2)

    Assert.Equal<int[]>([| 0; 1; 0; 1 |], offsets Paper)
    Assert.Equal<int[]>([| 0; 0; 1; 1 |], offsets Blocks)

[<Fact>]
let ``invalid sizes raise ArgumentOutOfRangeException naming the parameter`` () =
    let config = configOf [ 8, 2 ] Paper false None

    Assert.Equal(
        "n",
        Assert.Throws<ArgumentOutOfRangeException>(fun () -> Plan.summarise config 0 2 4 false |> ignore).ParamName
    )

    Assert.Equal(
        "heads",
        Assert.Throws<ArgumentOutOfRangeException>(fun () -> Plan.summarise config 8 0 4 false |> ignore).ParamName
    )

    Assert.Equal(
        "headDim",
        Assert.Throws<ArgumentOutOfRangeException>(fun () -> Plan.summarise config 8 2 0 false |> ignore).ParamName
    )

    Assert.Equal(
        "width",
        Assert
            .Throws<ArgumentOutOfRangeException>(fun () -> Plan.diameter (Plan.SlidingWindow(0, false)) 8 |> ignore)
            .ParamName
    )

// Where the fused dilated forward (and backward) spends its time at one N, float32, b = 1, h = 8, d = 64,
// groups (2048,1) (4096,2) (8192,4): kernels on strided views vs on contiguous copies, the merge, per-part
// rates, and the same fused kernel on contiguous blocks. After a Release build:
//   dotnet fsi tests/bench/profile.fsx 32768 causal      (or noncausal)
#r "nuget: TorchSharp-cpu, 0.107.0"
#r "nuget: Microsoft.ML.Tokenizers, 2.0.1"
#r "../../src/LongNet/bin/Release/net10.0/LongNet.dll"

open System
open System.Diagnostics
open TorchSharp
open LongNet

Native.ensureLoaded () |> ignore
let n = int64 fsi.CommandLineArgs.[1]
let causal = fsi.CommandLineArgs.[2] = "causal"
let h, d = 8L, 64L
let groups = [ (2048, 1); (4096, 2); (8192, 4) ]

let config =
    DilatedConfig.createOrRaise (groups |> List.map fst) (groups |> List.map snd) HeadOffsets.Paper causal None

torch.manual_seed 1L |> ignore
let q = torch.randn ([| 1L; h; n; d |])
let k = torch.randn ([| 1L; h; n; d |])
let v = torch.randn ([| 1L; h; n; d |])

let time label (f: unit -> unit) =
    f ()

    let ts =
        [
            for _ in 1..3 ->
                let sw = Stopwatch.StartNew() in
                f ()
                sw.Elapsed.TotalSeconds
        ]
        |> List.sort

    ts.[1]

let pairs =
    config.Groups |> List.sumBy (Plan.groupPairs config (int h) (int n)) |> float

printfn "N=%d pairs=%g" n pairs
// GEMM rate
let a = torch.randn ([| 2048L; 2048L |])

let gemm =
    time "gemm" (fun () -> use _ = torch.NewDisposeScope() in torch.matmul (a, a) |> ignore)

let gemmRate = 2.0 * 2048.0 ** 3.0 / gemm / 1e9
printfn "gemm %.1f GFLOP/s" gemmRate
let flopsOf p = 4.0 * float d * p

let full =
    time "full" (fun () -> use _ = torch.NewDisposeScope() in FusedDilated.forwardNoGrad config q k v |> ignore)

printfn
    "full forward      %.3f s  %.1f GFLOP/s (%.0f%% of GEMM)"
    full
    (flopsOf pairs / full / 1e9)
    (100.0 * flopsOf pairs / full / 1e9 / gemmRate)

let scale = 1.0 / sqrt (float d)

let parts =
    [
        for g in config.Groups do
            for p in BlockViews.parts config.Offsets g (int h) n -> g, p
    ]

let kernelViews =
    time "kv" (fun () ->
        for _, p in parts do
            (use _ = torch.NewDisposeScope() in

             Kernels.forward
                 scale
                 causal
                 None
                 (BlockViews.view p 0L q)
                 (BlockViews.view p 0L k)
                 (BlockViews.view p 0L v)
             |> ignore))

let copies =
    [
        for _, p in parts ->
            (BlockViews.view p 0L q).contiguous(),
            (BlockViews.view p 0L k).contiguous(),
            (BlockViews.view p 0L v).contiguous()
    ]

let kernelContig =
    time "kc" (fun () ->
        for (a, b, c) in copies do
            (use _ = torch.NewDisposeScope() in Kernels.forward scale causal None a b c |> ignore))

let copyOnly =
    time "copy" (fun () ->
        for _, p in parts do
            (use _ = torch.NewDisposeScope() in

             [ q; k; v ]
             |> List.iter (fun t -> (BlockViews.view p 0L t).contiguous() |> ignore)))

printfn "kernels on views  %.3f s  (%.0f%% of full)" kernelViews (100.0 * kernelViews / full)

printfn
    "kernels contig    %.3f s  (%.0f%% of full)  %.1f GFLOP/s"
    kernelContig
    (100.0 * kernelContig / full)
    (flopsOf pairs / kernelContig / 1e9)

printfn "strided copies    %.3f s  (%.0f%% of full)" copyOnly (100.0 * copyOnly / full)
printfn "merge+rest        %.3f s  (%.0f%% of full)" (full - kernelViews) (100.0 * (full - kernelViews) / full)

for (g, p), (a, b, c) in List.zip parts copies do
    let t =
        time "one" (fun () -> use _ = torch.NewDisposeScope() in Kernels.forward scale causal None a b c |> ignore)

    let rows = float p.Rows

    let pp =
        float p.HeadCount
        * float p.Segments
        * (if causal then rows * (rows + 1.0) / 2.0 else rows * rows)

    printfn
        "  group w=%d r=%d part heads=%d segs=%d rows=%d: %.3f s  %.1f GFLOP/s"
        g.SegmentLength
        g.DilationRate
        p.HeadCount
        p.Segments
        p.Rows
        t
        (flopsOf pp / t / 1e9)
// dense SDPA on one 2048-row causal block family with all 8 heads (the ideal per-call rate)
let blocks = n / 2048L
let qb = torch.randn ([| blocks; h; 2048L; d |])

let tb =
    time "blk" (fun () -> use _ = torch.NewDisposeScope() in Kernels.forward scale causal None qb qb qb |> ignore)

let pb =
    if causal then
        float blocks * float h * 2048.0 * 2049.0 / 2.0
    else
        float blocks * float h * 2048.0 * 2048.0

printfn "fused kernel, %d×8 contiguous causal 2048-blocks: %.3f s %.1f GFLOP/s" blocks tb (flopsOf pb / tb / 1e9)

let td =
    time "dense" (fun () ->
        use _ = torch.NewDisposeScope() in

        torch.nn.functional.scaled_dot_product_attention (qb, qb, qb, is_casual = true)
        |> ignore)

printfn "torch SDPA same blocks: %.3f s %.1f GFLOP/s" td (flopsOf pb / td / 1e9)

// backward
let out, lse = FusedDilated.forwardNoGrad config q k v
let dout = torch.randn_like q

let bwd =
    time "bwd" (fun () -> use _ = torch.NewDisposeScope() in FusedDilated.backward config q k v out lse dout |> ignore)

printfn "full backward     %.3f s  %.1f GFLOP/s on 2.5x forward FLOPs" bwd (2.5 * flopsOf pairs / bwd / 1e9)
let ob, lb = Kernels.forward scale causal None qb qb qb

let tbb =
    time "blkb" (fun () ->
        use _ = torch.NewDisposeScope() in Kernels.backward scale causal None qb qb qb qb ob lb |> ignore)

printfn "fused backward, contiguous 2048-blocks: %.3f s %.1f GFLOP/s on 2.5x" tbb (2.5 * flopsOf pb / tbb / 1e9)

/// `longnet attention-demo`: a showcase on an embedded default — dilated attention checked against the dense
/// oracle, then run on a long sequence with its plan (coverage, pairs, FLOPs, path length) and timing.
module LongNet.Cli.Demo

open System.Diagnostics
open TorchSharp
open LongNet
open LongNet.Cli.Args

/// The command's help text.
let help =
    """longnet attention-demo [--n N] [--seed S]

Runs the embedded demonstration: (1) dilated attention with one group (w ≥ N, r = 1) equals dense
attention; (2) the default groups (2048,4096,8192 / 1,2,4) on N tokens (default 16384), 8 heads,
head dim 64, float32: time, attended pairs versus dense, and the attention graph's diameter."""

/// Runs `longnet attention-demo` and returns the exit code.
let run (argv: string list) : int =
    let p = parse [ "n"; "seed" ] [] argv

    let n = intOption p "n" 1L 1_048_576L 16384L

    let seed = intOption p "seed" 0L (int64 System.Int32.MaxValue) 17L

    Native.ensureLoaded () |> ignore
    torch.manual_seed seed |> ignore
    use scope = torch.NewDisposeScope()

    printfn "1. Equivalence with dense attention (float64, N = 1000, 4 heads, head dim 16, causal and not)"

    for causal in [ false; true ] do
        use _inner = torch.NewDisposeScope()

        let q, k, v =
            torch.randn (1L, 4L, 1000L, 16L, dtype = torch.float64),
            torch.randn (1L, 4L, 1000L, 16L, dtype = torch.float64),
            torch.randn (1L, 4L, 1000L, 16L, dtype = torch.float64)

        let config = DilatedConfig.createOrRaise [ 1024 ] [ 1 ] Paper causal None
        let dilated = DilatedAttention.forward config q k v
        let dense, _ = Dense.attend (1.0 / 4.0) causal q k v
        printfn "   causal=%-5b max |dilated - dense| = %.2e" causal ((dilated - dense).abs().max().item<float>())

    let heads, headDim = 8, 64
    let segments = [ 2048; 4096; 8192 ] |> List.filter (fun w -> int64 w <= max n 2048L)
    let rates = [ 1; 2; 4 ] |> List.take segments.Length
    let config = DilatedConfig.createOrRaise segments rates Paper true None

    printfn
        "\n2. Dilated attention, causal, N = %d, groups %A / %A, %d heads, head dim %d, float32"
        n
        segments
        rates
        heads
        headDim

    let summary = Plan.summarise config (int n) heads headDim (n <= 16384L)
    printfn "%s" (Plan.format summary)

    let q, k, v =
        torch.randn (1L, int64 heads, n, int64 headDim),
        torch.randn (1L, int64 heads, n, int64 headDim),
        torch.randn (1L, int64 heads, n, int64 headDim)

    DilatedAttention.forward config q k v |> ignore // warm-up
    let clock = Stopwatch.StartNew()
    let out = DilatedAttention.forward config q k v
    let seconds = clock.Elapsed.TotalSeconds

    printfn
        "   forward: %.3f s (%.1f GFLOP/s on the sparse FLOPs); output finite: %b"
        seconds
        (summary.Flops / seconds / 1e9)
        (out.isfinite().all().item<bool>())

    0

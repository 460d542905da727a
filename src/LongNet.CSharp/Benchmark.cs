using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.FSharp.Core;
using TorchSharp;
using FsBenchCell = global::LongNet.BenchCell;
using FsBenchEvent = global::LongNet.BenchEvent;
using FsBenchmarking = global::LongNet.Benchmarking;
using FsBenchResult = global::LongNet.BenchResult;
using FsBenchSettings = global::LongNet.BenchSettings;

namespace LongNet.CSharp;

/// <summary>
/// Times forward and forward+backward of attention implementations (dilated, dense SDPA) on the same
/// random inputs over a grid of sequence lengths — the median of several runs after a warm-up — with
/// attended pairs, FLOPs, GFLOP/s, the share of the machine's GEMM rate, the speed-up over dense and the
/// peak memory; what <c>longnet bench</c> measures. Build one with <see cref="Create"/>.
/// </summary>
/// <remarks>Immutable and holds no native memory; <see cref="Run"/> allocates and frees the inputs of each cell.</remarks>
public sealed class Benchmark
{
    private readonly BenchmarkBuilder.Settings settings;

    internal Benchmark(BenchmarkBuilder.Settings settings) => this.settings = settings;

    /// <summary>The names of the implementations a benchmark can time (e.g. "dilated", "dense").</summary>
    public static IReadOnlyList<string> KnownImplementations { get; } = Interop.ReadOnly(FsBenchmarking.implementations);

    /// <summary>
    /// Starts a builder with the defaults of <c>longnet bench</c> on the CPU: N = 2K … 128K, both modes,
    /// dilated and dense, groups (2048,1) (4096,2) (8192,4) non-causal, float32, 3 repeats, batch 1,
    /// 8 heads, head dimension 64, dense cells over 120 s skipped.
    /// </summary>
    /// <returns>A new <see cref="BenchmarkBuilder"/>.</returns>
    public static BenchmarkBuilder Create() => new();

    /// <summary>The sequence lengths N.</summary>
    public IReadOnlyList<long> SequenceLengths => Interop.ReadOnly(settings.SequenceLengths);

    /// <summary>The implementations timed.</summary>
    public IReadOnlyList<string> Implementations => Interop.ReadOnly(settings.Implementations);

    /// <summary>The modes timed.</summary>
    public IReadOnlyList<BenchmarkMode> Modes => Interop.ReadOnly(settings.Modes);

    /// <summary>The dilated attention timed (dense attention uses its causality).</summary>
    public DilatedAttention Attention => settings.Attention;

    /// <summary>
    /// Measures the GEMM rate, then every cell (for each N, each mode, each implementation), calling
    /// <paramref name="onCell"/> as each completes. Takes as long as the grid needs: minutes at the defaults.
    /// </summary>
    /// <param name="onCell">Called with each measured cell (optional).</param>
    /// <returns>The measured cells, the skipped ones and the machine.</returns>
    /// <exception cref="InvalidOperationException">The device is CUDA but libtorch has no CUDA.</exception>
    public BenchmarkResult Run(Action<BenchmarkCell>? onCell = null)
    {
        LongNetRuntime.EnsureLoaded();
        if (settings.Cuda && !torch.cuda.is_available())
        {
            throw new InvalidOperationException(
                $"the device is CUDA but the loaded libtorch has none; set {LongNetRuntime.TorchLibraryVariable} to a CUDA PyTorch's torch/lib.");
        }

        var device = new torch.Device(settings.Cuda ? "cuda" : "cpu");
        var dtype = settings.DType ?? (settings.Cuda ? torch.ScalarType.BFloat16 : torch.ScalarType.Float32);
        var fsSettings = new FsBenchSettings(
            Interop.ToFSharpList(settings.SequenceLengths),
            Interop.ToFSharpList(settings.Modes.Select(BenchmarkCell.ModeName)),
            Interop.ToFSharpList(settings.Implementations),
            settings.Attention.Config,
            dtype,
            device,
            settings.Repeats,
            settings.Batch,
            settings.Heads,
            settings.HeadDim,
            settings.MaxDenseSeconds,
            null); // select-and-merge rows use Benchmarking.defaultSelectMerge

        var skipped = new List<BenchmarkSkip>();
        var report = FuncConvert.FromAction<FsBenchEvent>(e =>
        {
            switch (e)
            {
                case FsBenchEvent.Measured measured:
                    onCell?.Invoke(new BenchmarkCell(measured.Item));
                    break;
                case FsBenchEvent.Skipped skip:
                    skipped.Add(new BenchmarkSkip(skip.impl, BenchmarkCell.ParseMode(skip.mode), skip.n, skip.expectedSeconds));
                    break;
            }
        });

        return new BenchmarkResult(FsBenchmarking.run(fsSettings, report), skipped.AsReadOnly());
    }
}

/// <summary>One measured cell of a benchmark: the fields of one entry of <c>results</c> in <c>longnet bench</c>'s JSON.</summary>
public sealed record BenchmarkCell
{
    internal BenchmarkCell(FsBenchCell cell)
    {
        Implementation = cell.Impl;
        SequenceLength = cell.N;
        Mode = ParseMode(cell.Mode);
        Causal = cell.Causal;
        MedianSeconds = cell.MedianSeconds;
        Pairs = cell.Pairs;
        Flops = cell.Flops;
        Gflops = cell.Gflops;
        GemmFraction = cell.GemmFraction;
        SpeedupVsDense = Interop.ToNullable(cell.SpeedupVsDense);
        PeakMb = Interop.ToNullable(cell.PeakMb);
    }

    /// <summary>The implementation ("impl"): "dilated" or "dense".</summary>
    public string Implementation { get; }

    /// <summary>The sequence length N ("n").</summary>
    public long SequenceLength { get; }

    /// <summary>What was timed ("mode": "fwd" or "fwdbwd").</summary>
    public BenchmarkMode Mode { get; }

    /// <summary>Whether the attention was causal ("causal").</summary>
    public bool Causal { get; }

    /// <summary>The median wall time of one run in seconds ("median_s").</summary>
    public double MedianSeconds { get; }

    /// <summary>Attended (query, key) pairs over batch and heads ("pairs").</summary>
    public long Pairs { get; }

    /// <summary>FLOPs on the attended pairs: 4·pairs·d forward, 3.5 times that with backward ("flops").</summary>
    public double Flops { get; }

    /// <summary>FLOPs per second in units of 10⁹ ("gflops").</summary>
    public double Gflops { get; }

    /// <summary><see cref="Gflops"/> as a fraction of the GEMM rate ("gemm_fraction").</summary>
    public double GemmFraction { get; }

    /// <summary>Dense time / this time at the same N and mode, for dilated cells with a dense cell ("speedup_vs_dense"), else null.</summary>
    public double? SpeedupVsDense { get; }

    /// <summary>Peak resident memory above the pre-cell baseline in MB (CPU on Linux; "peak_mb"), else null.</summary>
    public double? PeakMb { get; }

    internal static string ModeName(BenchmarkMode mode) => mode == BenchmarkMode.ForwardBackward ? "fwdbwd" : "fwd";

    internal static BenchmarkMode ParseMode(string mode) => mode == "fwdbwd" ? BenchmarkMode.ForwardBackward : BenchmarkMode.Forward;
}

/// <summary>A dense cell left out because it was expected to take longer than the builder's <c>MaxDenseSeconds</c>.</summary>
public sealed record BenchmarkSkip
{
    internal BenchmarkSkip(string implementation, BenchmarkMode mode, long sequenceLength, double expectedSeconds)
    {
        Implementation = implementation;
        Mode = mode;
        SequenceLength = sequenceLength;
        ExpectedSeconds = expectedSeconds;
    }

    /// <summary>The implementation.</summary>
    public string Implementation { get; }

    /// <summary>The mode.</summary>
    public BenchmarkMode Mode { get; }

    /// <summary>The sequence length N.</summary>
    public long SequenceLength { get; }

    /// <summary>The seconds it was expected to take at the measured GEMM rate.</summary>
    public double ExpectedSeconds { get; }
}

/// <summary>The machine a benchmark ran on (the JSON's <c>machine</c>).</summary>
public sealed record BenchmarkMachine
{
    internal BenchmarkMachine(global::LongNet.BenchMachine m)
    {
        Cpu = m.Cpu;
        Cores = m.Cores;
        TorchThreads = m.TorchThreads;
        OperatingSystem = m.Os;
        DotnetVersion = m.Dotnet;
        Device = m.Device;
        Date = m.Date;
    }

    /// <summary>The CPU model name ("unknown" where not readable).</summary>
    public string Cpu { get; }

    /// <summary>Logical processors.</summary>
    public int Cores { get; }

    /// <summary>libtorch's intra-op threads.</summary>
    public int TorchThreads { get; }

    /// <summary>The operating system.</summary>
    public string OperatingSystem { get; }

    /// <summary>The .NET runtime version.</summary>
    public string DotnetVersion { get; }

    /// <summary>The device measured.</summary>
    public string Device { get; }

    /// <summary>When the run ended (UTC, ISO 8601).</summary>
    public string Date { get; }
}

/// <summary>The result of <see cref="Benchmark.Run"/>.</summary>
public sealed class BenchmarkResult
{
    private readonly FsBenchResult result;

    internal BenchmarkResult(FsBenchResult result, IReadOnlyList<BenchmarkSkip> skipped)
    {
        this.result = result;
        Cells = Interop.ReadOnly(result.Cells.Select(c => new BenchmarkCell(c)));
        Skipped = skipped;
        Machine = new BenchmarkMachine(result.Machine);
    }

    /// <summary>The GEMM rate (a 2048³ matmul in the benchmark's dtype) in GFLOP/s.</summary>
    public double GemmGflops => result.GemmGflops;

    /// <summary>The machine.</summary>
    public BenchmarkMachine Machine { get; }

    /// <summary>The measured cells, in grid order.</summary>
    public IReadOnlyList<BenchmarkCell> Cells { get; }

    /// <summary>The dense cells left out for time.</summary>
    public IReadOnlyList<BenchmarkSkip> Skipped { get; }

    /// <summary>The least-squares slope of peak memory over N, in bytes per token, for one implementation and mode (null with fewer than two measured points).</summary>
    /// <param name="implementation">An implementation name.</param>
    /// <param name="mode">A mode.</param>
    /// <returns>Bytes per token, or null.</returns>
    public double? MemorySlope(string implementation, BenchmarkMode mode)
    {
        ArgumentNullException.ThrowIfNull(implementation);
        var name = BenchmarkCell.ModeName(mode);
        var cells = result.Cells.Where(c => c.Impl == implementation && c.Mode == name);
        return Interop.ToNullable(FsBenchmarking.memorySlope(Interop.ToFSharpList(cells)));
    }

    /// <summary>The JSON <c>longnet bench --json</c> writes: <c>machine</c>, <c>gemm_gflops</c> and <c>results</c>.</summary>
    /// <returns>Indented JSON text.</returns>
    public string ToJson() => FsBenchmarking.toJson(result);

    /// <summary>The table <c>longnet bench</c> prints.</summary>
    /// <returns>The table.</returns>
    public string Format() => FsBenchmarking.table(result.Cells);

    /// <summary>The table of <see cref="Format"/>.</summary>
    /// <returns>The table.</returns>
    public override string ToString() => Format();
}

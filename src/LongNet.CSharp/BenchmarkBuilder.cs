using System;
using System.Linq;
using TorchSharp;

namespace LongNet.CSharp;

/// <summary>
/// Builds a <see cref="Benchmark"/>. Immutable; each method checks its argument at once.
/// <code>
/// var result = Benchmark.Create()
///     .SequenceLengths(1024, 2048, 4096)
///     .Modes(BenchmarkMode.Forward)
///     .Attention(DilatedAttention.Create().Segments(256, 512).Rates(1, 2).Causal().Build())
///     .Repeats(3)
///     .Build()
///     .Run(cell => Console.WriteLine($"{cell.Implementation} N={cell.SequenceLength}: {cell.MedianSeconds:F4} s"));
/// File.WriteAllText("bench.json", result.ToJson());
/// </code>
/// </summary>
public sealed class BenchmarkBuilder
{
    private readonly Settings settings;

    internal BenchmarkBuilder()
        : this(new Settings(
            [2048, 4096, 8192, 16384, 32768, 65536, 131072],
            [BenchmarkMode.Forward, BenchmarkMode.ForwardBackward],
            ["dilated", "dense"],
            DilatedAttention.Create().Segments(2048, 4096, 8192).Rates(1, 2, 4).Build(),
            null,
            false,
            3,
            1,
            8,
            64,
            120.0)) { }

    private BenchmarkBuilder(Settings settings) => this.settings = settings;

    /// <summary>The sequence lengths N, measured in this order.</summary>
    /// <param name="sequenceLengths">One or more lengths in [1, 2³¹ − 1].</param>
    /// <returns>A builder with these lengths.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="sequenceLengths"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="sequenceLengths"/> is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A length is outside [1, 2³¹ − 1].</exception>
    public BenchmarkBuilder SequenceLengths(params long[] sequenceLengths) =>
        new(settings with
        {
            SequenceLengths = Checks.NonEmpty(sequenceLengths, nameof(sequenceLengths), (v, p) =>
            {
                if (v is < 1 or > int.MaxValue)
                {
                    throw new ArgumentOutOfRangeException(p, v, $"{p} must be in [1, {int.MaxValue}], got {v}.");
                }
            }),
        });

    /// <summary>What to time (default: both modes).</summary>
    /// <param name="modes">One or more modes.</param>
    /// <returns>A builder with these modes.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="modes"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="modes"/> is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A mode is not a defined value.</exception>
    public BenchmarkBuilder Modes(params BenchmarkMode[] modes) =>
        new(settings with { Modes = Checks.NonEmpty(modes, nameof(modes), (v, p) => Checks.Defined(v, p)).Distinct().ToArray() });

    /// <summary>The implementations to time, by name (default "dilated", "dense"; see <see cref="Benchmark.KnownImplementations"/>).</summary>
    /// <param name="implementations">One or more names.</param>
    /// <returns>A builder with these implementations.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="implementations"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="implementations"/> is empty or names an unknown implementation.</exception>
    public BenchmarkBuilder Implementations(params string[] implementations) =>
        new(settings with
        {
            Implementations = Checks.NonEmpty(implementations, nameof(implementations), (v, p) =>
            {
                if (v is null || !Benchmark.KnownImplementations.Contains(v))
                {
                    throw new ArgumentException($"{p} must be among {string.Join(", ", Benchmark.KnownImplementations)}, got '{v}'.", p);
                }
            }).Distinct().ToArray(),
        });

    /// <summary>The dilated attention to time: groups, head offsets, causality and scale (dense attention uses its causality; the kernel is the default one).</summary>
    /// <param name="attention">A built attention.</param>
    /// <returns>A builder with this attention.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="attention"/> is null.</exception>
    public BenchmarkBuilder Attention(DilatedAttention attention)
    {
        ArgumentNullException.ThrowIfNull(attention);
        return new(settings with { Attention = attention });
    }

    /// <summary>The dtype of the inputs (default float32 on the CPU, bfloat16 on CUDA).</summary>
    /// <param name="dtype">Float32, Float64, BFloat16 or Float16.</param>
    /// <returns>A builder with this dtype.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="dtype"/> is not a floating-point type.</exception>
    public BenchmarkBuilder DType(torch.ScalarType dtype)
    {
        if (dtype is not (torch.ScalarType.Float32 or torch.ScalarType.Float64 or torch.ScalarType.BFloat16 or torch.ScalarType.Float16))
        {
            throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "dtype must be Float32, Float64, BFloat16 or Float16.");
        }

        return new(settings with { DType = dtype });
    }

    /// <summary>Whether to measure on CUDA (default: the CPU).</summary>
    /// <param name="cuda">True for the first CUDA device.</param>
    /// <returns>A builder with this device.</returns>
    public BenchmarkBuilder Cuda(bool cuda = true) => new(settings with { Cuda = cuda });

    /// <summary>Timed runs per cell after one warm-up; the median is reported (default 3).</summary>
    /// <param name="repeats">The count, in [1, 100].</param>
    /// <returns>A builder with this count.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="repeats"/> is not in [1, 100].</exception>
    public BenchmarkBuilder Repeats(int repeats)
    {
        if (repeats is < 1 or > 100)
        {
            throw new ArgumentOutOfRangeException(nameof(repeats), repeats, $"repeats must be in [1, 100], got {repeats}.");
        }

        return new(settings with { Repeats = repeats });
    }

    /// <summary>The batch size (default 1).</summary>
    /// <param name="batch">The size, ≥ 1.</param>
    /// <returns>A builder with this size.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="batch"/> is &lt; 1.</exception>
    public BenchmarkBuilder Batch(int batch) => new(settings with { Batch = Checks.AtLeast(batch, 1, nameof(batch)) });

    /// <summary>The number of heads (default 8).</summary>
    /// <param name="heads">The count, ≥ 1.</param>
    /// <returns>A builder with this count.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="heads"/> is &lt; 1.</exception>
    public BenchmarkBuilder Heads(int heads) => new(settings with { Heads = Checks.AtLeast(heads, 1, nameof(heads)) });

    /// <summary>The head dimension (default 64).</summary>
    /// <param name="headDim">The width, ≥ 1.</param>
    /// <returns>A builder with this width.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="headDim"/> is &lt; 1.</exception>
    public BenchmarkBuilder HeadDim(int headDim) => new(settings with { HeadDim = Checks.AtLeast(headDim, 1, nameof(headDim)) });

    /// <summary>Skips dense cells expected (from the GEMM rate) to take longer than this (default 120 s).</summary>
    /// <param name="maxDenseSeconds">A finite number &gt; 0.</param>
    /// <returns>A builder with this limit.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxDenseSeconds"/> is not a finite number &gt; 0.</exception>
    public BenchmarkBuilder MaxDenseSeconds(double maxDenseSeconds) =>
        new(settings with { MaxDenseSeconds = Checks.Above(maxDenseSeconds, 0.0, nameof(maxDenseSeconds)) });

    /// <summary>Returns the benchmark these settings describe (nothing is measured yet).</summary>
    /// <returns>The <see cref="Benchmark"/>.</returns>
    public Benchmark Build() => new(settings);

    internal sealed record Settings(
        long[] SequenceLengths,
        BenchmarkMode[] Modes,
        string[] Implementations,
        DilatedAttention Attention,
        torch.ScalarType? DType,
        bool Cuda,
        int Repeats,
        long Batch,
        long Heads,
        long HeadDim,
        double MaxDenseSeconds);
}

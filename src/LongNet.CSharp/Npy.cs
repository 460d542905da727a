using System;
using System.Collections.Generic;
using static TorchSharp.torch;
using FsNpy = global::LongNet.Npy;

namespace LongNet.CSharp;

/// <summary>The element type of an <see cref="NpyArray"/>.</summary>
public enum NpyElementType
{
    /// <summary>Little-endian float32 (<c>&lt;f4</c>).</summary>
    Float32 = 0,

    /// <summary>Little-endian float64 (<c>&lt;f8</c>).</summary>
    Float64 = 1,
}

/// <summary>
/// NumPy <c>.npy</c> files without Python: reads format versions 1.0, 2.0 and 3.0, writes 1.0 (2.0 for
/// very long headers); float32 and float64, C order. Writes are atomic (a temporary file, then a rename).
/// </summary>
public static class Npy
{
    /// <summary>Reads a <c>.npy</c> file.</summary>
    /// <param name="path">The file to read.</param>
    /// <returns>The array, in C order.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="path"/> is null.</exception>
    /// <exception cref="System.IO.InvalidDataException">The file is malformed, truncated or of an unsupported kind (big-endian, Fortran order, another dtype).</exception>
    /// <exception cref="System.IO.IOException">The file cannot be read.</exception>
    public static NpyArray Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        return new NpyArray(FsNpy.read(path));
    }

    /// <summary>Writes an array as a <c>.npy</c> file, atomically.</summary>
    /// <param name="path">The file to write (replaced if it exists).</param>
    /// <param name="array">The array.</param>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="System.IO.IOException">The file cannot be written; an existing file is left as it was.</exception>
    public static void Write(string path, NpyArray array)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(array);
        FsNpy.write(path, array.Core);
    }

    /// <summary>Parses the bytes of a <c>.npy</c> file.</summary>
    /// <param name="bytes">The whole file.</param>
    /// <returns>The array.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="bytes"/> is null.</exception>
    /// <exception cref="System.IO.InvalidDataException">The bytes are not a supported <c>.npy</c> file; the message names the problem.</exception>
    public static NpyArray Parse(byte[] bytes)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        var parsed = FsNpy.parse(bytes);
        return parsed.IsOk ? new NpyArray(parsed.ResultValue) : throw new System.IO.InvalidDataException(parsed.ErrorValue);
    }

    /// <summary>The bytes of a <c>.npy</c> file holding an array.</summary>
    /// <param name="array">The array.</param>
    /// <returns>The file's bytes.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="array"/> is null.</exception>
    public static byte[] Serialize(NpyArray array)
    {
        ArgumentNullException.ThrowIfNull(array);
        return FsNpy.serialize(array.Core);
    }

    /// <summary>Reads a <c>.npy</c> file as a CPU tensor of its dtype and shape.</summary>
    /// <param name="path">The file to read.</param>
    /// <returns>A new float32 or float64 tensor, owned by the caller.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="path"/> is null.</exception>
    /// <exception cref="System.IO.InvalidDataException">The file is malformed or of an unsupported kind.</exception>
    public static Tensor ReadTensor(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        return FsNpy.readTensor(path);
    }

    /// <summary>Writes a float32 or float64 tensor (any device and layout) as a <c>.npy</c> file, atomically.</summary>
    /// <param name="path">The file to write (replaced if it exists).</param>
    /// <param name="tensor">The tensor; it is not disposed.</param>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="tensor"/> is neither float32 nor float64.</exception>
    public static void WriteTensor(string path, Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensor);
        FsNpy.writeTensor(path, tensor);
    }
}

/// <summary>
/// An n-dimensional float32 or float64 array as stored in a <c>.npy</c> file: its shape (rank 0 and
/// zero-length axes allowed) and its elements in C (row-major) order. Immutable: it keeps its own copy.
/// </summary>
public sealed class NpyArray
{
    internal NpyArray(FsNpy.NpyArray core)
    {
        Core = core;
        Shape = Array.AsReadOnly((long[])core.Shape.Clone());
    }

    internal FsNpy.NpyArray Core { get; }

    /// <summary>The length of each axis, outermost first (empty for a scalar).</summary>
    public IReadOnlyList<long> Shape { get; }

    /// <summary>The element type.</summary>
    public NpyElementType ElementType => Core.Data.IsFloat32 ? NpyElementType.Float32 : NpyElementType.Float64;

    /// <summary>The number of elements (the product of the shape; 1 for a scalar).</summary>
    public int Length => FsNpy.dataLength(Core.Data);

    /// <summary>An array of float32 elements.</summary>
    /// <param name="data">The elements in C order (copied).</param>
    /// <param name="shape">The length of each axis, outermost first; none for a scalar. The product must be <c>data.Length</c>.</param>
    /// <returns>The array.</returns>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An axis of <paramref name="shape"/> is negative.</exception>
    /// <exception cref="ArgumentException">The product of <paramref name="shape"/> is not <c>data.Length</c>.</exception>
    public static NpyArray FromFloat32(float[] data, params long[] shape)
    {
        ArgumentNullException.ThrowIfNull(data);
        var checkedShape = CheckShape(shape, data.Length);
        return new NpyArray(new FsNpy.NpyArray(checkedShape, FsNpy.NpyData.NewFloat32((float[])data.Clone())));
    }

    /// <summary>An array of float64 elements.</summary>
    /// <param name="data">The elements in C order (copied).</param>
    /// <param name="shape">The length of each axis, outermost first; none for a scalar. The product must be <c>data.Length</c>.</param>
    /// <returns>The array.</returns>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An axis of <paramref name="shape"/> is negative.</exception>
    /// <exception cref="ArgumentException">The product of <paramref name="shape"/> is not <c>data.Length</c>.</exception>
    public static NpyArray FromFloat64(double[] data, params long[] shape)
    {
        ArgumentNullException.ThrowIfNull(data);
        var checkedShape = CheckShape(shape, data.Length);
        return new NpyArray(new FsNpy.NpyArray(checkedShape, FsNpy.NpyData.NewFloat64((double[])data.Clone())));
    }

    /// <summary>The shape and elements of a float32 or float64 tensor (copied to the CPU, C order).</summary>
    /// <param name="tensor">The tensor, of any device and layout; it is not disposed.</param>
    /// <returns>The array.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="tensor"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="tensor"/> is neither float32 nor float64.</exception>
    public static NpyArray FromTensor(Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        return new NpyArray(FsNpy.ofTensor(tensor));
    }

    /// <summary>A copy of the float32 elements, in C order.</summary>
    /// <returns>The elements.</returns>
    /// <exception cref="InvalidOperationException">The array holds float64 elements.</exception>
    public float[] ToFloat32Array() =>
        Core.Data is FsNpy.NpyData.Float32 f
            ? (float[])f.Item.Clone()
            : throw new InvalidOperationException("the array holds float64 elements; use ToFloat64Array().");

    /// <summary>A copy of the float64 elements, in C order.</summary>
    /// <returns>The elements.</returns>
    /// <exception cref="InvalidOperationException">The array holds float32 elements.</exception>
    public double[] ToFloat64Array() =>
        Core.Data is FsNpy.NpyData.Float64 d
            ? (double[])d.Item.Clone()
            : throw new InvalidOperationException("the array holds float32 elements; use ToFloat32Array().");

    /// <summary>A CPU tensor of the array's dtype and shape, holding a copy of its elements.</summary>
    /// <returns>A new tensor, owned by the caller.</returns>
    public Tensor ToTensor() => FsNpy.toTensor(Core);

    /// <summary>The element type and shape, e.g. <c>NpyArray(Float64, [2, 3])</c>.</summary>
    /// <returns>The description.</returns>
    public override string ToString() => $"NpyArray({ElementType}, [{string.Join(", ", Shape)}])";

    private static long[] CheckShape(long[] shape, int length)
    {
        ArgumentNullException.ThrowIfNull(shape);
        long count = 1;
        foreach (var axis in shape)
        {
            if (axis < 0)
            {
                throw new ArgumentOutOfRangeException(nameof(shape), axis, $"shape axes must be ≥ 0, got {axis}.");
            }

            count = axis == 0 || count == 0 ? 0 : (count > long.MaxValue / axis ? -1 : count * axis);
            if (count < 0)
            {
                throw new ArgumentException("shape has too many elements.", nameof(shape));
            }
        }

        if (count != length)
        {
            throw new ArgumentException(
                $"shape [{string.Join(", ", shape)}] holds {count} elements but data has {length}.", nameof(shape));
        }

        return (long[])shape.Clone();
    }
}

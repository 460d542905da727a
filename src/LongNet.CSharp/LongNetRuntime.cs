using FsNative = global::LongNet.Native;

namespace LongNet.CSharp;

/// <summary>Loading of libtorch and TorchSharp's native bridge (see the README's "Native loading").</summary>
public static class LongNetRuntime
{
    /// <summary>
    /// The environment variable naming a libtorch folder to load instead of the CPU package's, for
    /// example the <c>torch/lib</c> folder of a CUDA build of PyTorch.
    /// </summary>
    public const string TorchLibraryVariable = FsNative.TorchLibVariable;

    /// <summary>The environment variable naming the folder for patched native copies (default: <c>~/.cache/longnet/native</c>).</summary>
    public const string NativeCacheVariable = FsNative.CacheVariable;

    /// <summary>
    /// Loads libtorch and TorchSharp's native bridge, patching a copy of the bridge where this system's
    /// libstdc++ is too old for it; safe to call often (the work happens once). Call it before your own
    /// first use of <c>torch</c>; every LongNet entry point calls it.
    /// </summary>
    /// <returns>What was loaded, for diagnostics.</returns>
    /// <exception cref="System.ArgumentException">The torch-library variable names a folder without libtorch.</exception>
    public static NativeLoadInfo EnsureLoaded()
    {
        var report = FsNative.ensureLoaded();
        return new NativeLoadInfo(
            Interop.ToNullableString(report.TorchLib),
            Interop.ToNullableString(report.LibTorchSharp),
            report.Patched,
            report.Cuda);
    }
}

/// <summary>How <see cref="LongNetRuntime.EnsureLoaded"/> brought in the native libraries.</summary>
public sealed record NativeLoadInfo
{
    internal NativeLoadInfo(string? torchLibraryDirectory, string? libTorchSharpPath, bool patched, bool cuda)
    {
        TorchLibraryDirectory = torchLibraryDirectory;
        LibTorchSharpPath = libTorchSharpPath;
        Patched = patched;
        Cuda = cuda;
    }

    /// <summary>The folder libtorch was found in, or null where TorchSharp's own loader was left to find it.</summary>
    public string? TorchLibraryDirectory { get; }

    /// <summary>The path of TorchSharp's native bridge that was loaded (a patched copy when <see cref="Patched"/>), or null.</summary>
    public string? LibTorchSharpPath { get; }

    /// <summary>Whether a patched copy of the bridge was needed (an older libstdc++, e.g. Debian 12).</summary>
    public bool Patched { get; }

    /// <summary>Whether the loaded libtorch has CUDA.</summary>
    public bool Cuda { get; }
}

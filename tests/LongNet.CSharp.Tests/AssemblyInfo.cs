using Xunit;

// TorchSharp's Scalar is a raw native handle with a finalizer: every op that takes one (even `a + b`,
// whose alpha is an implicit Scalar) can read freed memory if another thread triggers a garbage
// collection during the native call. Test classes running on parallel threads make that likely, so
// this assembly runs its tests one at a time (see tests/LongNet.Tests/AssemblyInfo.fs).
[assembly: CollectionBehavior(DisableTestParallelization = true)]

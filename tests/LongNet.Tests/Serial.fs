namespace LongNet.Tests

open Xunit

/// Tests that use process-wide state — libtorch's global random generator (seeded training runs that
/// must reproduce exactly) or the console (redirected to capture a command's output) — run in this
/// collection: one at a time, after the parallel tests. The model tests run here too: garbage
/// collections triggered by other test threads can free TorchSharp's temporary Scalars during a
/// native call (a TorchSharp lifetime issue), which made long model runs flaky beside parallel tests.
[<CollectionDefinition("serial", DisableParallelization = true)>]
type SerialCollection() = class end

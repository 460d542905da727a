namespace LongNet.Tests

open Xunit

/// Tests that use process-wide state — libtorch's global random generator (seeded training runs that
/// must reproduce exactly) or the console (redirected to capture a command's output) — run in this
/// collection: one at a time, after the parallel tests.
[<CollectionDefinition("serial", DisableParallelization = true)>]
type SerialCollection() = class end

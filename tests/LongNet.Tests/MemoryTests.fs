/// Memory stays flat (the short variant; the Expecto suite runs 1,000 and 200 steps with an RSS bound that
/// catches a leak of one activation per step): forward and backward steps of the multi-head layer and
/// optimizer steps of a tiny model leave no live tensor behind, and the resident set grows by less than
/// the allocator's noise (64 MiB).
[<Xunit.Collection("serial")>]
module LongNet.Tests.MemoryTests

open Xunit
open Xunit.Abstractions
open LongNet.Tests.MemoryProbe

type MemoryTests(output: ITestOutputHelper) =
    [<Fact>]
    member _.``100 forward and backward steps of the attention layer keep memory flat``() =
        use layer = attentionLayer ()
        let growth = measure 20 100 attentionActivationBytes 64.0 (attentionStep layer None)
        output.WriteLine(describe "attention layer" growth)
        Assert.True(isFlat growth, describe "attention layer" growth)

    [<Fact>]
    member _.``30 training steps of a tiny model keep memory flat``() =
        let session, tokens = trainingSession ()
        use session = session
        let growth = measure 5 30 trainingActivationBytes 64.0 (trainingStep session tokens)
        output.WriteLine(describe "training" growth)
        Assert.True(isFlat growth, describe "training" growth)

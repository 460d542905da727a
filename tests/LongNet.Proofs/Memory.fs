/// Memory stays flat over long runs: 1,000 forward and backward steps of the multi-head layer and 200
/// optimizer steps of a tiny model (the short variant runs in the xunit suite), with a self-check that the
/// same probe flags a step that leaks one activation.
module LongNet.Proofs.Memory

open Expecto
open TorchSharp
open LongNet.Tests.MemoryProbe

let tests =
    testList
        "memory stays flat"
        [
            test "1,000 forward and backward steps of the multi-head dilated attention layer" {
                use layer = attentionLayer ()
                let growth = measure 50 1000 attentionActivationBytes 0.0 (attentionStep layer None)
                printfn "  %s" (describe "attention layer" growth)
                Expect.isTrue (isFlat growth) (describe "attention layer" growth)
            }
            test "200 training steps of a tiny model" {
                let session, tokens = trainingSession ()
                use session = session

                let growth =
                    measure 10 200 trainingActivationBytes 0.0 (trainingStep session tokens)

                printfn "  %s" (describe "training" growth)
                Expect.isTrue (isFlat growth) (describe "training" growth)
            }
            test "the probe flags a step that keeps one activation alive (self-check)" {
                use layer = attentionLayer ()
                let kept = ResizeArray<torch.Tensor>()

                let growth =
                    measure 50 1000 attentionActivationBytes 0.0 (attentionStep layer (Some kept))

                printfn "  %s" (describe "deliberately leaking layer" growth)

                for t in kept do
                    t.Dispose()

                Expect.equal growth.LiveTensors 1000L "one live tensor more per step"
                Expect.isGreaterThan growth.ResidentMiB growth.BoundMiB "RSS grows past the bound"
            }
        ]

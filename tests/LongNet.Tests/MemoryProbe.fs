/// Memory flatness over many steps: counts TorchSharp's live tensors on this thread (dispose statistics)
/// and the process's resident set size before and after a run of steps, after a warm-up. Shared by the
/// short xunit variant (MemoryTests) and the long one in the Expecto suite (1,000 and 200 steps).
module LongNet.Tests.MemoryProbe

open System
open TorchSharp
open LongNet
open LongNet.Modules
open LongNet.Text
open LongNet.Training

/// What a run of steps did to memory.
type MemoryGrowth =
    {
        Steps: int
        /// Live tensors (created minus disposed on this thread) after the run minus before it.
        LiveTensors: int64
        /// Resident set size after the run minus before it, in MiB.
        ResidentMiB: float
        /// The bound on ResidentMiB: half of what leaking one activation per step would add, or the noise
        /// floor given to `measure` when that is larger (short runs).
        BoundMiB: float
    }

let private residentMiB () =
    GC.Collect()
    GC.WaitForPendingFinalizers()
    GC.Collect()
    float Environment.WorkingSet / 1048576.0

/// Runs `step` `warmup` times, then `steps` times, measuring live tensors and RSS around the second run.
/// `activationBytes` is the size of one activation; leaking one per step would add steps × that. The RSS
/// bound is half of that, but at least `floorMiB` (the allocator's noise, for runs too short to tell).
let measure (warmup: int) (steps: int) (activationBytes: int64) (floorMiB: float) (step: unit -> unit) : MemoryGrowth =
    for _ in 1..warmup do
        step ()

    let liveBefore = DisposeScopeManager.Statistics.ThreadTotalLiveCount
    let rssBefore = residentMiB ()

    for _ in 1..steps do
        step ()

    let rssAfter = residentMiB ()

    {
        Steps = steps
        LiveTensors = DisposeScopeManager.Statistics.ThreadTotalLiveCount - liveBefore
        ResidentMiB = rssAfter - rssBefore
        BoundMiB = max floorMiB (float steps * float activationBytes / 1048576.0 / 2.0)
    }

/// Whether the run kept memory flat: no live tensor gained, RSS growth under the bound.
let isFlat (g: MemoryGrowth) : bool =
    g.LiveTensors = 0L && g.ResidentMiB < g.BoundMiB

/// One line describing a run, for the suite's output and the docs.
let describe (what: string) (g: MemoryGrowth) : string =
    sprintf
        "%s: %d steps, live tensors %+d, RSS %+.1f MiB (bound %.1f MiB)"
        what
        g.Steps
        g.LiveTensors
        g.ResidentMiB
        g.BoundMiB

/// The layer of the attention memory runs: embed 64, 4 heads, groups (32,1) (64,2) (128,4), causal, RoPE.
let attentionLayer () : MultiheadDilatedAttention =
    Native.ensureLoaded () |> ignore
    torch.manual_seed 5L |> ignore

    new MultiheadDilatedAttention(
        "attention",
        {
            Embed = 64
            Heads = 4
            Dilated = DilatedConfig.createOrRaise [ 32; 64; 128 ] [ 1; 2; 4 ] Paper true None
            Attention = AttentionKind.Dilated
            Position = Rope Rope.defaultRope
            SubLayerNorm = true
            Dropout = 0.1
            Bias = true
            LayerNormEpsilon = 1e-5
            SmearedKeys = false
            KvHeads = 4
            Lora = None
        }
    )

/// The input shape of the attention memory runs, [2, 256, 64] float32: one activation is 128 KiB.
let attentionInputShape = [| 2L; 256L; 64L |]

/// The bytes of one activation of the attention runs.
let attentionActivationBytes = 2L * 256L * 64L * 4L

/// One forward and backward step of `layer` on a fresh random input. With `leak`, the step keeps its
/// output alive in that list: the deliberate leak that shows the probe catches one.
let attentionStep (layer: MultiheadDilatedAttention) (leak: ResizeArray<torch.Tensor> option) () : unit =
    use scope = torch.NewDisposeScope()
    let x = torch.randn(attentionInputShape).requires_grad_ true
    let out = layer.forward x
    out.square().mean().backward()
    layer.zero_grad ()

    match leak with
    | Some kept -> kept.Add(out.detach().clone().DetachFromDisposeScope())
    | None -> ()

/// A tiny training session (embed 32, 2 layers, batch 4 × 64 tokens, byte-level) and its token stream.
let trainingSession () : TrainSession * int[] =
    Native.ensureLoaded () |> ignore

    let config =
        { RunConfig.tiny with
            Train =
                { RunConfig.tiny.Train with
                    Steps = 100_000
                    WarmupSteps = 5
                }
        }

    let text =
        String.replicate 60 "The river ran past the mill and under the old stone bridge. "

    let session =
        TrainSession.Create(config, Tokenizer.byteLevel ())
        |> Result.defaultWith failwith

    session, Text.Encoding.UTF8.GetBytes text |> Array.map int

/// The bytes of one activation of the training runs: the logits [4, 64, 259] in float32.
let trainingActivationBytes = 4L * 64L * 259L * 4L

/// One optimizer step of `session` on `tokens`.
let trainingStep (session: TrainSession) (tokens: int[]) () : unit =
    match session.TrainStep tokens with
    | Ok _ -> ()
    | Error e -> failwith e

/// Training hyper-parameters: a record with defaults, validation naming the field, and JSON.
namespace LongNet.Training

open System.Text.Json.Nodes
open LongNet

/// The number format of weights and activations during training.
type Precision =
    /// float32 everywhere.
    | Fp32
    /// bfloat16 weights and activations; fp32 master weights, optimizer moments and loss.
    | Bf16
    /// float64 everywhere (slow; for exact comparisons, e.g. sequence-parallel against one process).
    | Fp64

/// Functions over `Precision`.
module Precision =
    /// "fp32", "bf16" or "fp64".
    let name (p: Precision) =
        match p with
        | Fp32 -> "fp32"
        | Bf16 -> "bf16"
        | Fp64 -> "fp64"

    /// The tensor dtype of a precision.
    let dtype (p: Precision) =
        match p with
        | Fp32 -> TorchSharp.torch.ScalarType.Float32
        | Bf16 -> TorchSharp.torch.ScalarType.BFloat16
        | Fp64 -> TorchSharp.torch.ScalarType.Float64

/// What the training sequences are.
type TrainTask =
    /// Random windows of a text corpus (language modelling).
    | TextWindows
    /// Freshly generated passkey samples (prompt + answer) — `Passkey.trainingSample` — no corpus needed.
    | PasskeySamples

/// How a model is trained.
type TrainConfig =
    {
        /// Where the training sequences come from.
        Task: TrainTask
        /// Optimizer steps in the whole run (the schedule spans them).
        Steps: int
        /// Sequences per micro-batch.
        BatchSize: int
        /// Tokens per training sequence.
        SeqLen: int
        /// Micro-batches whose gradients are summed into one optimizer step.
        Accumulation: int
        /// Peak learning rate.
        LearningRate: float
        /// Final learning rate as a fraction of the peak.
        MinLearningRateRatio: float
        /// Linear warm-up steps.
        WarmupSteps: int
        /// AdamW decoupled weight decay (matrices only).
        WeightDecay: float
        /// AdamW β₁.
        Beta1: float
        /// AdamW β₂.
        Beta2: float
        /// AdamW ε.
        Epsilon: float
        /// Maximum global gradient norm (0 = no clipping).
        GradClip: float
        /// fp32 or bf16.
        Precision: Precision
        /// Seed of initialisation, batch sampling and dropout.
        Seed: int64
        /// Log a line every this many steps.
        LogEvery: int
        /// Save a checkpoint every this many steps (0 = only at the end).
        CheckpointEvery: int
        /// Validation tokens used for the loss logged every `CheckpointEvery` steps and at the end.
        EvalTokens: int
        /// The first sequence length of a short-to-long curriculum (0: none): the length doubles in equal
        /// stages over the first `CurriculumSteps` steps up to `SeqLen`, with `BatchSize × SeqLen / length`
        /// sequences per micro-batch, so every step trains on the same number of tokens.
        CurriculumStartLength: int
        /// The steps the curriculum spans (after them every sequence has `SeqLen` tokens).
        CurriculumSteps: int
        /// The chance, after each chunk of text in the copy warm-up's training stream, of a random span
        /// that is repeated later (0: no warm-up; see `CopyWarmup.stream`).
        CopyWarmupShare: float
        /// The first steps that read their windows from the copy warm-up's stream.
        CopyWarmupSteps: int
        /// The first steps that train on copy problems of random tokens instead of text (0: none; see
        /// `CopyWarmup.copyProblem`: 8 × 128 tokens per step), so that copying starts before the text is
        /// learnt. Like `CopyWarmupSteps` it counts from step 1: warm-up steps up to it are problems.
        CopyProblemSteps: int
    }

/// Defaults, validation and JSON of `TrainConfig`.
module TrainConfig =
    /// 2000 steps of 16 × 256 tokens, lr 1e-3 with 100 warm-up steps, cosine to 10%, AdamW (0.9, 0.95),
    /// weight decay 0.1, clipping at 1, fp32, seed 1.
    let defaults: TrainConfig =
        {
            Task = TextWindows
            Steps = 2000
            BatchSize = 16
            SeqLen = 256
            Accumulation = 1
            LearningRate = 1e-3
            MinLearningRateRatio = 0.1
            WarmupSteps = 100
            WeightDecay = 0.1
            Beta1 = 0.9
            Beta2 = 0.95
            Epsilon = 1e-8
            GradClip = 1.0
            Precision = Fp32
            Seed = 1L
            LogEvery = 10
            CheckpointEvery = 500
            EvalTokens = 16384
            CurriculumStartLength = 0
            CurriculumSteps = 0
            CopyWarmupShare = 0.0
            CopyWarmupSteps = 0
            CopyProblemSteps = 0
        }

    /// The schedule of a run.
    let schedule (c: TrainConfig) : Schedule =
        {
            Peak = c.LearningRate
            FloorRatio = c.MinLearningRateRatio
            WarmupSteps = c.WarmupSteps
            TotalSteps = c.Steps
        }

    /// The optimizer settings of a run.
    let adamW (c: TrainConfig) : AdamWSettings =
        {
            Beta1 = c.Beta1
            Beta2 = c.Beta2
            Epsilon = c.Epsilon
            WeightDecay = c.WeightDecay
        }

    /// The training sequence length at step `step` (1-based): `SeqLen`, or with a curriculum
    /// `CurriculumStartLength · 2^stage`, the stages dividing the first `CurriculumSteps` steps equally.
    let sequenceLengthAt (c: TrainConfig) (step: int) : int =
        if c.CurriculumStartLength = 0 || step > c.CurriculumSteps then
            c.SeqLen
        else
            let stages =
                System.Numerics.BitOperations.Log2(uint (c.SeqLen / c.CurriculumStartLength))

            let stage = int (int64 (max 0 (step - 1)) * int64 stages / int64 c.CurriculumSteps)
            c.CurriculumStartLength <<< stage

    /// Sequences per micro-batch at step `step`: `BatchSize × SeqLen / sequenceLengthAt step`.
    let batchSizeAt (c: TrainConfig) (step: int) : int =
        c.BatchSize * (c.SeqLen / sequenceLengthAt c step)

    /// Checks every field; the error names the first offending one.
    let validate (c: TrainConfig) : Result<TrainConfig, ConfigError> =
        let error p m = Error { Parameter = p; Message = m }

        if c.Steps < 1 then
            error "steps" $"steps must be ≥ 1, got {c.Steps}."
        elif c.BatchSize < 1 then
            error "batchSize" $"batchSize must be ≥ 1, got {c.BatchSize}."
        elif c.SeqLen < 1 then
            error "seqLen" $"seqLen must be ≥ 1, got {c.SeqLen}."
        elif c.Accumulation < 1 then
            error "accumulation" $"accumulation must be ≥ 1, got {c.Accumulation}."
        elif not (c.LearningRate > 0.0 && c.LearningRate < 1.0) then
            error "learningRate" $"learningRate must be in (0, 1), got {c.LearningRate}."
        elif not (c.MinLearningRateRatio >= 0.0 && c.MinLearningRateRatio <= 1.0) then
            error "minLearningRateRatio" $"minLearningRateRatio must be in [0, 1], got {c.MinLearningRateRatio}."
        elif c.WarmupSteps < 0 then
            error "warmupSteps" $"warmupSteps must be ≥ 0, got {c.WarmupSteps}."
        elif not (c.WeightDecay >= 0.0 && c.WeightDecay < 1.0) then
            error "weightDecay" $"weightDecay must be in [0, 1), got {c.WeightDecay}."
        elif not (c.Beta1 >= 0.0 && c.Beta1 < 1.0) then
            error "beta1" $"beta1 must be in [0, 1), got {c.Beta1}."
        elif not (c.Beta2 >= 0.0 && c.Beta2 < 1.0) then
            error "beta2" $"beta2 must be in [0, 1), got {c.Beta2}."
        elif not (c.Epsilon > 0.0) then
            error "epsilon" $"epsilon must be > 0, got {c.Epsilon}."
        elif not (c.GradClip >= 0.0) then
            error "gradClip" $"gradClip must be ≥ 0, got {c.GradClip}."
        elif c.LogEvery < 1 then
            error "logEvery" $"logEvery must be ≥ 1, got {c.LogEvery}."
        elif c.CheckpointEvery < 0 then
            error "checkpointEvery" $"checkpointEvery must be ≥ 0, got {c.CheckpointEvery}."
        elif c.EvalTokens < 1 then
            error "evalTokens" $"evalTokens must be ≥ 1, got {c.EvalTokens}."
        elif
            c.CurriculumStartLength < 0
            || c.CurriculumStartLength >= c.SeqLen && c.CurriculumStartLength <> 0
        then
            error
                "curriculumStartLength"
                $"curriculumStartLength must be 0 (no curriculum) or in [1, seqLen − 1 = {c.SeqLen - 1}], got {c.CurriculumStartLength}."
        elif
            c.CurriculumStartLength > 0
            && (c.SeqLen % c.CurriculumStartLength <> 0
                || System.Numerics.BitOperations.PopCount(uint (c.SeqLen / c.CurriculumStartLength))
                   <> 1)
        then
            error
                "curriculumStartLength"
                $"curriculumStartLength must be seqLen = {c.SeqLen} divided by a power of two (the length doubles), got {c.CurriculumStartLength}."
        elif c.CurriculumStartLength > 0 && c.CurriculumSteps < 1 then
            error "curriculumSteps" $"curriculumSteps must be ≥ 1 with a curriculum, got {c.CurriculumSteps}."
        elif c.CurriculumSteps < 0 then
            error "curriculumSteps" $"curriculumSteps must be ≥ 0, got {c.CurriculumSteps}."
        elif c.CurriculumStartLength > 0 && c.Task <> TextWindows then
            error "curriculumStartLength" "a sequence-length curriculum applies to text windows (task \"text\") only."
        elif not (c.CopyWarmupShare >= 0.0 && c.CopyWarmupShare < 1.0) then
            error "copyWarmupShare" $"copyWarmupShare must be in [0, 1), got {c.CopyWarmupShare}."
        elif c.CopyWarmupSteps < 0 then
            error "copyWarmupSteps" $"copyWarmupSteps must be ≥ 0, got {c.CopyWarmupSteps}."
        elif c.CopyWarmupShare > 0.0 && c.CopyWarmupSteps = 0 then
            error "copyWarmupSteps" "copyWarmupSteps must be ≥ 1 when copyWarmupShare is above 0."
        elif c.CopyWarmupShare > 0.0 && c.Task <> TextWindows then
            error "copyWarmupShare" "the copy warm-up applies to text windows (task \"text\") only."
        elif c.CopyWarmupShare > 0.0 && c.SeqLen < CopyWarmup.minWindow then
            error
                "copyWarmupShare"
                $"the copy warm-up repeats spans of up to {CopyWarmup.maxSpan} tokens across chunks of up to {CopyWarmup.maxChunk}; it needs seqLen ≥ {CopyWarmup.minWindow}, got {c.SeqLen}."
        elif
            c.CopyWarmupShare > 0.0
            && c.CurriculumStartLength > 0
            && c.CurriculumStartLength < CopyWarmup.minWindow
        then
            error
                "curriculumStartLength"
                $"with the copy warm-up every window must hold a span and its repeat: curriculumStartLength must be ≥ {CopyWarmup.minWindow}, got {c.CurriculumStartLength}."
        elif c.CopyProblemSteps < 0 then
            error "copyProblemSteps" $"copyProblemSteps must be ≥ 0, got {c.CopyProblemSteps}."
        elif c.CopyProblemSteps > 0 && c.Task <> TextWindows then
            error "copyProblemSteps" "copy problems precede text windows (task \"text\") only."
        else
            Ok c

    /// The names of the JSON fields.
    let fieldNames =
        [
            "task"
            "steps"
            "batchSize"
            "seqLen"
            "accumulation"
            "learningRate"
            "minLearningRateRatio"
            "warmupSteps"
            "weightDecay"
            "beta1"
            "beta2"
            "epsilon"
            "gradClip"
            "precision"
            "seed"
            "logEvery"
            "checkpointEvery"
            "evalTokens"
            "curriculumStartLength"
            "curriculumSteps"
            "copyWarmupShare"
            "copyWarmupSteps"
            "copyProblemSteps"
        ]

    /// The JSON form (every field written).
    let toJson (c: TrainConfig) : JsonObject =
        let o = JsonObject()
        let set (name: string) (value: JsonNode) = o.[name] <- value
        let int (x: int) = JsonValue.Create x :> JsonNode
        let float (x: float) = JsonValue.Create x :> JsonNode

        set
            "task"
            (JsonValue.Create(
                match c.Task with
                | TextWindows -> "text"
                | PasskeySamples -> "passkey"
            ))

        set "steps" (int c.Steps)
        set "batchSize" (int c.BatchSize)
        set "seqLen" (int c.SeqLen)
        set "accumulation" (int c.Accumulation)
        set "learningRate" (float c.LearningRate)
        set "minLearningRateRatio" (float c.MinLearningRateRatio)
        set "warmupSteps" (int c.WarmupSteps)
        set "weightDecay" (float c.WeightDecay)
        set "beta1" (float c.Beta1)
        set "beta2" (float c.Beta2)
        set "epsilon" (float c.Epsilon)
        set "gradClip" (float c.GradClip)
        set "precision" (JsonValue.Create(Precision.name c.Precision))
        set "seed" (JsonValue.Create c.Seed)
        set "logEvery" (int c.LogEvery)
        set "checkpointEvery" (int c.CheckpointEvery)
        set "evalTokens" (int c.EvalTokens)
        set "curriculumStartLength" (int c.CurriculumStartLength)
        set "curriculumSteps" (int c.CurriculumSteps)
        set "copyWarmupShare" (float c.CopyWarmupShare)
        set "copyWarmupSteps" (int c.CopyWarmupSteps)
        set "copyProblemSteps" (int c.CopyProblemSteps)
        o

    /// Reads a configuration from JSON (missing fields from `fallback`), then validates it.
    let ofJson (section: string) (fallback: TrainConfig) (node: JsonNode) : Result<TrainConfig, ConfigError> =
        JsonFields.catch (fun () ->
            let r = JsonFields.Reader(node, section)
            r.RejectUnknown fieldNames
            let big = System.Int32.MaxValue
            let unit (x: float) = x >= 0.0 && x < 1.0

            let precision =
                match r.String("precision", Precision.name fallback.Precision).ToLowerInvariant() with
                | "fp32" -> Fp32
                | "bf16" -> Bf16
                | "fp64" -> Fp64
                | other ->
                    let field = if section = "" then "precision" else $"{section}.precision"
                    JsonFields.fail field $"{field} must be \"fp32\", \"bf16\" or \"fp64\", got \"{other}\"."

            let task =
                match
                    r
                        .String(
                            "task",
                            match fallback.Task with
                            | TextWindows -> "text"
                            | PasskeySamples -> "passkey"
                        )
                        .ToLowerInvariant()
                with
                | "text" -> TextWindows
                | "passkey" -> PasskeySamples
                | other ->
                    let field = if section = "" then "task" else $"{section}.task"
                    JsonFields.fail field $"{field} must be \"text\" or \"passkey\", got \"{other}\"."

            {
                Task = task
                Steps = r.Int("steps", fallback.Steps, 1, big)
                BatchSize = r.Int("batchSize", fallback.BatchSize, 1, big)
                SeqLen = r.Int("seqLen", fallback.SeqLen, 1, big)
                Accumulation = r.Int("accumulation", fallback.Accumulation, 1, big)
                LearningRate =
                    r.Float("learningRate", fallback.LearningRate, (fun x -> x > 0.0 && x < 1.0), "in (0, 1)")
                MinLearningRateRatio =
                    r.Float(
                        "minLearningRateRatio",
                        fallback.MinLearningRateRatio,
                        (fun x -> x >= 0.0 && x <= 1.0),
                        "in [0, 1]"
                    )
                WarmupSteps = r.Int("warmupSteps", fallback.WarmupSteps, 0, big)
                WeightDecay = r.Float("weightDecay", fallback.WeightDecay, unit, "in [0, 1)")
                Beta1 = r.Float("beta1", fallback.Beta1, unit, "in [0, 1)")
                Beta2 = r.Float("beta2", fallback.Beta2, unit, "in [0, 1)")
                Epsilon = r.Float("epsilon", fallback.Epsilon, (fun x -> x > 0.0), "> 0")
                GradClip = r.Float("gradClip", fallback.GradClip, (fun x -> x >= 0.0), "≥ 0")
                Precision = precision
                Seed =
                    int64 (r.Float("seed", float fallback.Seed, (fun x -> floor x = x && abs x < 9e15), "an integer"))
                LogEvery = r.Int("logEvery", fallback.LogEvery, 1, big)
                CheckpointEvery = r.Int("checkpointEvery", fallback.CheckpointEvery, 0, big)
                EvalTokens = r.Int("evalTokens", fallback.EvalTokens, 1, big)
                CurriculumStartLength = r.Int("curriculumStartLength", fallback.CurriculumStartLength, 0, big)
                CurriculumSteps = r.Int("curriculumSteps", fallback.CurriculumSteps, 0, big)
                CopyWarmupShare = r.Float("copyWarmupShare", fallback.CopyWarmupShare, unit, "in [0, 1)")
                CopyWarmupSteps = r.Int("copyWarmupSteps", fallback.CopyWarmupSteps, 0, big)
                CopyProblemSteps = r.Int("copyProblemSteps", fallback.CopyProblemSteps, 0, big)
            })
        |> Result.bind (fun c ->
            validate c
            |> Result.mapError (fun e ->
                { e with
                    Parameter =
                        (if section = "" then
                             e.Parameter
                         else
                             $"{section}.{e.Parameter}")
                }))

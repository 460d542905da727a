/// Training a LongNet language model: seeded initialisation, random windows of the training tokens,
/// AdamW with warm-up + cosine schedule, gradient clipping and accumulation, fp32 or bf16, and exact
/// checkpoints — a run resumed from a checkpoint produces the same losses as one never interrupted,
/// because every source of randomness (batches, dropout) is drawn from one `Rng` whose state is saved.
/// Sequence parallel: given a communicator, every training sequence is split over its ranks (each rank
/// embeds, attends — with the others — and scores its slice), the gradients are summed over the ranks
/// and every rank applies the same AdamW step, so P ranks train exactly as one process would.
namespace LongNet.Training

open System
open System.Diagnostics
open TorchSharp
open LongNet
open LongNet.Distributed
open LongNet.Modules
open LongNet.Text

/// What one optimizer step did.
type StepReport =
    {
        /// The step just completed (1-based).
        Step: int
        /// Mean training loss over the step's micro-batches (nats per token).
        Loss: float
        /// The learning rate used.
        LearningRate: float
        /// The global gradient norm before clipping.
        GradNorm: float
        /// Tokens processed by this step.
        Tokens: int64
        /// Wall time of this step, in seconds.
        StepSeconds: float
        /// Training tokens so far (all steps, resumed ones included).
        TokensSeen: int64
        /// Training wall time so far, in seconds.
        ElapsedSeconds: float
        /// The CRD NTK draw of each micro-batch (empty unless the model's scaling is CRD NTK).
        Draws: CrdDraw list
    }

/// A training run in progress: the model, its optimizer and random state, and the step reached.
[<Sealed>]
type TrainSession
    private
    (
        config: RunConfig,
        tokenizer: ITokenizer,
        model: LongNetModel,
        optimizer: AdamW,
        rng: Rng,
        startStep: int,
        startTokens: int64,
        startSeconds: float,
        split: ICommunicator option
    ) =
    let mutable config = config
    let mutable step = startStep
    let mutable tokensSeen = startTokens
    let mutable elapsed = startSeconds
    let mutable schedule = TrainConfig.schedule config.Train
    let mutable detached = false
    let mutable trainingSlice: SequenceSlice option = None

    // The copy warm-up's stream of the last training text seen, for the window length it was built for
    // (built once per text and curriculum stage: repeats reach back at most a window minus a span, so
    // a span and its repeat fit one training window).
    let mutable warmupStream: (int[] * int * int[]) option = None

    let warmupOf (train: int[]) (windowLength: int) =
        let reach = CopyWarmup.reachFor windowLength

        match warmupStream with
        | Some(source, r, stream) when obj.ReferenceEquals(source, train) && r = reach -> stream
        | _ ->
            let c = config.Train

            let stream =
                CopyWarmup.stream c.Seed c.CopyWarmupShare reach (CopyWarmup.spanIds config.Model.VocabSize) train

            warmupStream <- Some(train, reach, stream)
            stream

    // This rank's slice of a training sequence (kept while the sequence length stays the same).
    let sliceOf (comm: ICommunicator) (length: int) =
        match trainingSlice with
        | Some s when s.Total = int64 length -> s
        | _ ->
            let s = SequenceSlice(comm, int64 length)
            trainingSlice <- Some s
            s

    // Sequence parallel start-up (collective): the ranks must run the same configuration and start
    // from rank 0's parameters.
    static let join (split: ICommunicator option) (config: RunConfig) (model: LongNetModel) =
        match split with
        | None -> ()
        | Some comm ->
            Collectives.verifySame comm "the training configuration" ((RunConfig.toJson config).ToJsonString())
            DataParallel.broadcastParameters comm 0 (model.parameters ())

    static let build (config: RunConfig) (split: ICommunicator option) =
        Native.ensureLoaded () |> ignore
        torch.manual_seed config.Train.Seed |> ignore
        let model = new LongNetModel(config.Model)

        match config.Train.Precision with
        | Bf16 -> model.``to`` (torch.ScalarType.BFloat16) |> ignore
        | Fp64 -> model.``to`` (torch.ScalarType.Float64) |> ignore
        | Fp32 -> ()

        join split config model

        let parameters = [ for struct (name, p) in model.named_parameters () -> name, p ]

        // with adapters only they and the norms train; the rest is frozen and holds no optimizer state
        let trainable =
            match config.Model.Lora with
            | None -> parameters
            | Some _ ->
                for name, p in parameters do
                    p.requires_grad <- LongNetModel.TrainedWithAdapters name

                parameters
                |> List.filter (fun (name, _) -> LongNetModel.TrainedWithAdapters name)

        model, new AdamW(trainable, TrainConfig.adamW config.Train)

    static let checkSplit (split: ICommunicator option) (model: ModelConfig) (train: TrainConfig) =
        match split with
        | Some _ when model.Attention <> AttentionKind.Dilated ->
            Error
                "model.attention: training split over ranks runs sequence-parallel dilated attention; use attention 'dilated' (dense and select-merge run in one process)."
        | Some _ when model.PositionScaling <> PlainRope ->
            Error
                "model.positionScaling: training split over ranks uses plain RoPE positions; fine-tune with a position scaling in one process."
        | Some _ when
            (match model.Position with
             | DistanceBiased _ -> true
             | _ -> false)
            ->
            Error
                "model.position: training split over ranks has no distance bias in its sequence-parallel attention; use position 'none', 'rope' or 'xpos', or train in one process."
        | Some _ when model.SmearedKeys ->
            Error
                "model.smearedKeys: training split over ranks does not exchange the key before each slice; train a model with smeared keys in one process."
        | Some _ when train.Task <> TextWindows ->
            Error "train.task: training split over ranks reads text windows; train the passkey task in one process."
        | Some comm when train.SeqLen < comm.Size ->
            Error
                $"train.seqLen: {train.SeqLen} positions cannot be split over {comm.Size} ranks (each needs ≥ 1); use seqLen ≥ {comm.Size}."
        | Some comm when train.CurriculumStartLength > 0 && train.CurriculumStartLength < comm.Size ->
            Error
                $"train.curriculumStartLength: the curriculum's first windows of {train.CurriculumStartLength} positions cannot be split over {comm.Size} ranks (each needs ≥ 1); use curriculumStartLength ≥ {comm.Size}."
        | _ -> Ok()

    // CRD draws windows of up to trainedLength tokens; a window longer than seqLen cannot be trained
    // (truncating it would train other lengths and positions than crd_log.csv reports).
    static let checkCrdLength (model: ModelConfig) (train: TrainConfig) =
        match model.PositionScaling with
        | CrdNtk k when k.TrainedLength > train.SeqLen ->
            Error
                $"model.positionScaling.trainedLength: CRD draws windows of up to trainedLength = {k.TrainedLength} tokens, longer than train.seqLen = {train.SeqLen}; use trainedLength ≤ seqLen."
        | CrdNtk _ when train.CurriculumStartLength > 0 ->
            Error
                "train.curriculumStartLength: CRD NTK draws its own window lengths; use no sequence-length curriculum with it."
        | _ -> Ok()

    /// Starts a run from scratch; the model's vocabulary size is set from the tokenizer.
    static member Create(config: RunConfig, tokenizer: ITokenizer) : Result<TrainSession, string> =
        TrainSession.Start(config, tokenizer, None)

    /// Starts a run from scratch with every training sequence split over the ranks of `comm` (sequence
    /// parallel). Collective: every rank calls it with the same configuration (checked).
    static member Create(config: RunConfig, tokenizer: ITokenizer, comm: ICommunicator) : Result<TrainSession, string> =
        TrainSession.Start(config, tokenizer, Some comm)

    static member private Start
        (config: RunConfig, tokenizer: ITokenizer, split: ICommunicator option)
        : Result<TrainSession, string> =
        let config = RunConfig.withVocabulary tokenizer config

        match ModelConfig.validate config.Model, TrainConfig.validate config.Train with
        | Ok m, _ when m.Architecture = Encoder ->
            Error
                "model.architecture: training predicts the next token and needs a decoder; a non-causal encoder sees the tokens it must predict."
        | Error e, _ -> Error $"model.{e.Parameter}: {e.Message}"
        | _, Error e -> Error $"train.{e.Parameter}: {e.Message}"
        | Ok _, Ok t when t.Task = PasskeySamples && t.SeqLen < Passkey.minimumSampleLength tokenizer ->
            Error
                $"train.seqLen: passkey samples need seqLen ≥ {Passkey.minimumSampleLength tokenizer} tokens with this tokenizer, got {t.SeqLen}."
        | Ok { PositionScaling = CrdNtk k }, Ok t when
            t.Task = PasskeySamples && k.MinLength < Passkey.minimumSampleLength tokenizer
            ->
            Error
                $"model.positionScaling.crdMinLength: passkey samples need crdMinLength ≥ {Passkey.minimumSampleLength tokenizer} tokens with this tokenizer, got {k.MinLength}."
        | Ok _, Ok train ->
            match
                checkCrdLength config.Model train
                |> Result.bind (fun () -> checkSplit split config.Model train)
            with
            | Error e -> Error e
            | Ok() ->
                let model, optimizer = build config split
                model.train ()

                Ok(
                    new TrainSession(
                        config,
                        tokenizer,
                        model,
                        optimizer,
                        Rng.Create config.Train.Seed,
                        0,
                        0L,
                        0.0,
                        split
                    )
                )

    /// Continues the run stored in a checkpoint. `steps` may extend (or shorten) the run's total steps;
    /// the schedule then spans the new total.
    static member Resume(checkpoint: LoadedCheckpoint, steps: int option) : Result<TrainSession, string> =
        TrainSession.Continue(checkpoint, steps, None)

    /// Continues the run stored in a checkpoint with every training sequence split over the ranks of
    /// `comm` (every rank loads the same checkpoint). Collective.
    static member Resume
        (checkpoint: LoadedCheckpoint, steps: int option, comm: ICommunicator)
        : Result<TrainSession, string> =
        TrainSession.Continue(checkpoint, steps, Some comm)

    static member private Continue
        (checkpoint: LoadedCheckpoint, steps: int option, split: ICommunicator option)
        : Result<TrainSession, string> =
        let header = checkpoint.Header

        match Tokenizer.ofSpec header.Tokenizer with
        | Error e -> Error e
        | Ok tokenizer ->
            let train =
                match steps with
                | Some s -> { header.Train with Steps = s }
                | None -> header.Train

            let config =
                {
                    Model = header.Model
                    Train = train
                    Tokenizer = FromCheckpoint
                }

            if header.Step >= train.Steps then
                Error
                    $"the checkpoint has already completed {header.Step} of {train.Steps} steps; raise `steps` to train further."
            else
                match
                    checkCrdLength config.Model train
                    |> Result.bind (fun () -> checkSplit split config.Model train)
                with
                | Error e -> Error e
                | Ok() ->
                    let model, optimizer = build config split

                    let optimizerState =
                        checkpoint.Tensors
                        |> Map.toSeq
                        |> Seq.choose (fun (name, t) ->
                            if name.StartsWith "optim." then
                                Some(name.Substring 6, t)
                            else
                                None)
                        |> Map.ofSeq

                    let loaded =
                        Checkpoint.loadWeights model checkpoint.Tensors
                        |> Result.bind (fun () ->
                            try
                                optimizer.Load(int64 header.Step, optimizerState)
                                Ok()
                            with e ->
                                Error e.Message)

                    match loaded with
                    | Error e ->
                        (optimizer :> IDisposable).Dispose()
                        model.Dispose()
                        Error $"the checkpoint does not fit its own configuration ({e}); it is damaged."
                    | Ok() ->
                        model.train ()

                        Ok(
                            new TrainSession(
                                config,
                                tokenizer,
                                model,
                                optimizer,
                                Rng(header.RngState),
                                header.Step,
                                header.TokensSeen,
                                header.ElapsedSeconds,
                                split
                            )
                        )

    /// The run's configuration (vocabulary resolved).
    member _.Config = config

    /// Changes the run's total steps (the cosine then spans the new total). Allowed only while still in
    /// warm-up, where no learning rate used so far depends on the total — so the run stays exactly
    /// reproducible from its saved configuration.
    member _.SetTotalSteps(total: int) =
        if total < 1 then
            invalidArg "total" $"the total number of steps must be ≥ 1, got {total}."

        if step >= config.Train.WarmupSteps then
            invalidOp $"the total can change only during warm-up (step {step} of {config.Train.WarmupSteps})."

        config <-
            { config with
                Train =
                    { config.Train with
                        Steps = max total (step + 1)
                    }
            }

        schedule <- TrainConfig.schedule config.Train

    /// The model being trained.
    member _.Model = model

    /// Replaces the freshly initialised weights with a checkpoint's (`Checkpoint.load`'s tensors, by name)
    /// before the first step — fine-tuning, `longnet train --init` — including the optimizer's fp32 master
    /// weights of a bf16 run. Fails naming the first missing or mis-shaped weight.
    member _.LoadWeights(tensors: Map<string, torch.Tensor>) : Result<unit, string> =
        if detached then
            Error "the model was detached from this session; start a new session to train further."
        elif step > 0 then
            Error $"weights can be loaded only before the first step; this run is at step {step}."
        else
            Checkpoint.loadWeights model tensors
            |> Result.map (fun () -> optimizer.ResetMasters(fun name -> tensors.TryFind $"model.{name}"))

    /// The communicator of the ranks every training sequence is split over (None: one process).
    member _.Communicator = split

    /// The tokenizer.
    member _.Tokenizer = tokenizer

    /// Completed optimizer steps.
    member _.Step = step

    /// Whether every configured step is done.
    member _.Finished = step >= config.Train.Steps

    /// Training tokens so far.
    member _.TokensSeen = tokensSeen

    /// Training wall time so far, in seconds.
    member _.ElapsedSeconds = elapsed

    /// The learning rate the next step will use.
    member _.NextLearningRate = Schedule.learningRate schedule (step + 1)

    /// One optimizer step on random windows of `train` (token ids) — during a copy warm-up, of
    /// `CopyWarmup.stream` of it; during the first `CopyProblemSteps`, on copy problems instead (8 × 128
    /// tokens, `train` unused) — or on generated passkey samples for the passkey task (`train` unused);
    /// with a curriculum, at `TrainConfig.sequenceLengthAt` the step. With CRD NTK scaling every micro-batch runs at its own draw
    /// (`ScaledRope.crdDraw` of the run's seed, the step and the micro-batch index): its length, its
    /// positions and its NTK scale. Fails — leaving the model as it was before the update — when the loss
    /// or the gradient norm is not finite.
    member _.TrainStep(train: int[]) : Result<StepReport, string> =
        let c = config.Train

        if detached then
            Error "the model was detached from this session; start a new session to train further."
        elif c.Task = TextWindows && train.Length < c.SeqLen + 1 then
            Error
                $"the training text has {train.Length} tokens; sequences of {c.SeqLen} need at least {c.SeqLen + 1}. Use a larger corpus or a smaller `seqLen`."
        else
            let watch = Stopwatch.StartNew()
            let next = step + 1

            let problems = c.Task = TextWindows && next <= c.CopyProblemSteps

            let train =
                if c.CopyWarmupShare > 0.0 && next <= c.CopyWarmupSteps && not problems then
                    warmupOf train (TrainConfig.sequenceLengthAt c next)
                else
                    train

            let draws =
                match config.Model.PositionScaling with
                | CrdNtk schedule ->
                    List.init c.Accumulation (fun i -> Some(ScaledRope.crdDraw schedule (int c.Seed) (next - 1) i))
                | _ -> List.replicate c.Accumulation None

            let lengths =
                draws
                |> List.map (fun d ->
                    match d with
                    | Some d -> d.Length // ≤ trainedLength ≤ seqLen (checked at the start)
                    | None -> TrainConfig.sequenceLengthAt c next)

            let rowsPerBatch = TrainConfig.batchSizeAt c next

            // copy problems: one micro-batch of random-token problems, at plain positions
            let draws = if problems then [ None ] else draws

            let batches =
                if problems then
                    let ids = CopyWarmup.spanIds config.Model.VocabSize

                    [
                        Array.init CopyWarmup.problemsPerStep (fun _ ->
                            CopyWarmup.copyProblem rng ids |> Array.map int64)
                    ]
                else
                    lengths
                    |> List.map (fun length ->
                        match c.Task with
                        | TextWindows ->
                            Array.init rowsPerBatch (fun _ ->
                                let start = rng.NextInt64(int64 (train.Length - length))
                                Array.init (length + 1) (fun j -> int64 train.[int start + j]))
                        | PasskeySamples ->
                            let source = Random(int (rng.NextSeed() % 2_147_483_647L))

                            Array.init c.BatchSize (fun _ ->
                                Passkey.trainingSample tokenizer (length + 1) source |> Array.map int64))

            let seed = rng.NextSeed()

            // Dropout on different ranks must not repeat one mask; rank 0 keeps the single-process seed.
            match split with
            | Some comm when comm.Rank > 0 -> torch.manual_seed ((Rng.Create(seed + int64 comm.Rank)).NextSeed())
            | _ -> torch.manual_seed seed
            |> ignore

            model.train ()
            optimizer.ZeroGrad()
            let mutable lossSum = 0.0
            let mutable tokens = 0L

            for rows, draw in List.zip batches draws do
                use scope = torch.NewDisposeScope()
                let width = int64 rows.[0].Length
                let batch = torch.tensor(Array.concat rows).view(int64 rows.Length, width)
                let input = batch.narrow (1L, 0L, width - 1L)
                let target = batch.narrow (1L, 1L, width - 1L)

                let loss =
                    match split, draw with
                    | Some comm, _ ->
                        // this rank's tokens' share of the mean over the whole sequence
                        let s = sliceOf comm (int width - 1)
                        let part (t: torch.Tensor) = t.narrow (1L, s.Start, s.Length)
                        use share = (float s.Length / float (width - 1L)).ToScalar()
                        (Evaluate.crossEntropy (model.ForwardSlice(part input, s)) (part target)).mul share
                    | None, Some d ->
                        let positions = ScaledRope.crdPositions d
                        Evaluate.crossEntropy (model.ForwardAt(input, positions, Some(NtkAware d.Scale))) target
                    | None, None -> Evaluate.crossEntropy (model.forward input) target

                use micro = (1.0 / float batches.Length).ToScalar()
                (loss.mul micro).backward()
                lossSum <- lossSum + loss.to_type(torch.ScalarType.Float64).item<float>()
                tokens <- tokens + int64 rows.Length * (width - 1L)

            let lossSum =
                match split with
                | None -> lossSum
                | Some comm ->
                    // the whole sequence's loss, and its gradient on every rank
                    // frozen weights (low-rank fine-tuning) have no gradient to sum
                    DataParallel.sumGradients comm (model.parameters () |> Seq.filter _.requires_grad)
                    use scope = torch.NewDisposeScope()
                    (Collectives.allReduceSum comm (torch.tensor [| lossSum |])).[0].item<float>()

            let loss = lossSum / float batches.Length
            let norm = optimizer.ClipGradients c.GradClip

            if not (Double.IsFinite loss) then
                optimizer.ZeroGrad()

                Error
                    $"the training loss became {loss} at step {next}; lower the learning rate (train.learningRate) or use fp32 precision."
            elif not (Double.IsFinite norm) then
                optimizer.ZeroGrad()

                Error
                    $"the gradient norm became {norm} at step {next}; lower the learning rate (train.learningRate) or use fp32 precision."
            else
                let lr = Schedule.learningRate schedule next
                optimizer.Step lr
                step <- next
                tokensSeen <- tokensSeen + tokens
                let seconds = watch.Elapsed.TotalSeconds
                elapsed <- elapsed + seconds

                Ok
                    {
                        Step = next
                        Loss = loss
                        LearningRate = lr
                        GradNorm = norm
                        Tokens = tokens
                        StepSeconds = seconds
                        TokensSeen = tokensSeen
                        ElapsedSeconds = elapsed
                        Draws = List.choose id draws
                    }

    /// Mean validation loss (nats per token) over windows of the training length (collective when the
    /// sequences are split over ranks).
    member _.ValidationLoss(validation: int[]) : Result<float, string> =
        let length = min config.Train.SeqLen (validation.Length - 1)

        if length < 1 then
            Error "the validation text is too short to evaluate."
        else
            match split with
            | None -> Evaluate.perplexity model validation length config.Train.EvalTokens
            | Some comm -> Evaluate.perplexitySplit comm model validation length config.Train.EvalTokens
            |> Result.map _.MeanNll

    /// The checkpoint header of the current state.
    member _.Header: CheckpointHeader =
        {
            Model = config.Model
            Train = config.Train
            Tokenizer = tokenizer.Spec
            Step = step
            RngState = rng.State
            TokensSeen = tokensSeen
            ElapsedSeconds = elapsed
        }

    /// Saves the whole state to `path` atomically.
    member s.Save(path: string) =
        if detached then
            invalidOp "the model was detached from this session; its optimizer state is gone and cannot be saved."

        let tensors =
            Checkpoint.weights model
            @ (optimizer.State |> List.map (fun (name, t) -> $"optim.{name}", t))

        Checkpoint.save path s.Header tensors

    /// Ends the run and hands its model to the caller: frees the optimizer state and returns the model
    /// (in eval mode), which disposing the session then leaves alive. The session cannot train afterwards.
    member _.DetachModel() : LongNetModel =
        if detached then
            invalidOp "the model was already detached from this session."

        detached <- true
        (optimizer :> IDisposable).Dispose()
        model.zero_grad ()
        model.eval ()
        model

    interface IDisposable with
        member _.Dispose() =
            if not detached then
                (optimizer :> IDisposable).Dispose()
                model.Dispose()

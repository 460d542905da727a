/// Checkpoints: one self-contained file holding the configuration, the tokenizer, the weights, the
/// optimizer's moments, the step and the random generator's state, written atomically (a temporary
/// file in the same folder, flushed to disk, then renamed over the old one), so a failed or interrupted
/// save never damages the previous checkpoint.
///
/// Layout: a safetensors file (readable by any safetensors reader: weights "model.<param>", optimizer
/// state "optim.<state>") whose `__metadata__` holds "format": "pt", the LongNet header as JSON under
/// "longnet.checkpoint", and under "longnet.sha256" a SHA-256 over the metadata and every tensor's name,
/// dtype, shape and bytes, so any change to the file is detected. Checkpoints of the earlier layout
/// (magic "LNCKPT01", an int32 header length, the JSON header, the raw tensor bytes and a SHA-256 of
/// everything before) still load.
namespace LongNet.Training

open System
open System.IO
open System.Security.Cryptography
open System.Text
open System.Text.Json.Nodes
open TorchSharp
open LongNet
open LongNet.Modules
open LongNet.Text

/// Everything a checkpoint holds besides the tensors' storage.
type CheckpointHeader =
    {
        /// The model's configuration.
        Model: ModelConfig
        /// The training configuration of the run that wrote it.
        Train: TrainConfig
        /// The tokenizer (BPE vocabularies are stored in full).
        Tokenizer: TokenizerSpec
        /// Completed optimizer steps.
        Step: int
        /// The state of the run's `Rng` after `Step` steps.
        RngState: uint64
        /// Training tokens consumed so far.
        TokensSeen: int64
        /// Training wall time so far, in seconds.
        ElapsedSeconds: float
    }

/// A loaded checkpoint: header and named CPU tensors ("model.<param>", "optim.<state>").
type LoadedCheckpoint =
    {
        /// Configuration, tokenizer and counters.
        Header: CheckpointHeader
        /// The stored tensors by name (owned by the caller; dispose them when done).
        Tensors: Map<string, torch.Tensor>
    }

/// Writing and reading checkpoint files.
module Checkpoint =
    let private magic = Encoding.ASCII.GetBytes "LNCKPT01"

    let private dtypeName (t: torch.ScalarType) =
        match t with
        | torch.ScalarType.Float32 -> "float32"
        | torch.ScalarType.Float64 -> "float64"
        | torch.ScalarType.BFloat16 -> "bfloat16"
        | torch.ScalarType.Float16 -> "float16"
        | torch.ScalarType.Int64 -> "int64"
        | other -> invalidArg "dtype" $"checkpoints cannot store {other} tensors."

    let private dtypeOf (name: string) =
        match name with
        | "float32" -> Some torch.ScalarType.Float32
        | "float64" -> Some torch.ScalarType.Float64
        | "bfloat16" -> Some torch.ScalarType.BFloat16
        | "float16" -> Some torch.ScalarType.Float16
        | "int64" -> Some torch.ScalarType.Int64
        | _ -> None

    let private tokenizerJson (spec: TokenizerSpec) =
        let o = JsonObject()

        match spec with
        | ByteLevel -> o.["kind"] <- JsonValue.Create "byte"
        | ByteBpe merges ->
            o.["kind"] <- JsonValue.Create "byte-bpe"
            o.["merges"] <- JsonValue.Create(BytePairEncoding.toText merges)
        | Bpe(vocab, merges) ->
            o.["kind"] <- JsonValue.Create "bpe"
            o.["vocabJson"] <- JsonValue.Create vocab
            o.["merges"] <- JsonValue.Create merges
        | SentencePiece model ->
            o.["kind"] <- JsonValue.Create "sentencepiece"
            o.["model"] <- JsonValue.Create(Convert.ToBase64String model)
        | Tiktoken encoding ->
            o.["kind"] <- JsonValue.Create "tiktoken"
            o.["encoding"] <- JsonValue.Create encoding
        | IdsOnly vocabSize ->
            o.["kind"] <- JsonValue.Create "ids"
            o.["vocabSize"] <- JsonValue.Create vocabSize

        o

    /// The metadata key of the LongNet header in a checkpoint.
    let private headerKey = "longnet.checkpoint"

    /// The metadata key of the checkpoint's digest.
    let private digestKey = "longnet.sha256"

    /// The JSON of everything a header holds.
    let private headerJson (header: CheckpointHeader) : JsonObject =
        let json = JsonObject()
        json.["format"] <- JsonValue.Create 2
        json.["model"] <- ModelConfig.toJson header.Model
        json.["train"] <- TrainConfig.toJson header.Train
        json.["tokenizer"] <- tokenizerJson header.Tokenizer
        json.["step"] <- JsonValue.Create header.Step
        json.["rngState"] <- JsonValue.Create(header.RngState.ToString())
        json.["tokensSeen"] <- JsonValue.Create header.TokensSeen
        json.["elapsedSeconds"] <- JsonValue.Create header.ElapsedSeconds
        json

    /// The header stored in `root` (either layout); raises on a malformed one.
    let private headerOfJson (root: JsonObject) : Result<CheckpointHeader, string> =
        let model =
            ModelConfig.ofJson "model" ModelConfig.defaults root.["model"]
            |> Result.mapError _.Message

        let train =
            TrainConfig.ofJson "train" TrainConfig.defaults root.["train"]
            |> Result.mapError _.Message

        let tokenizer =
            let t = root.["tokenizer"].AsObject()

            match t.["kind"].GetValue<string>() with
            | "byte" -> Ok ByteLevel
            | "byte-bpe" -> BytePairEncoding.ofText (t.["merges"].GetValue<string>()) |> Result.map ByteBpe
            | "bpe" -> Ok(Bpe(t.["vocabJson"].GetValue<string>(), t.["merges"].GetValue<string>()))
            | "sentencepiece" -> Ok(SentencePiece(Convert.FromBase64String(t.["model"].GetValue<string>())))
            | "tiktoken" -> Ok(Tiktoken(t.["encoding"].GetValue<string>()))
            | "ids" -> Ok(IdsOnly(t.["vocabSize"].GetValue<int>()))
            | other -> Error $"unknown tokenizer kind '{other}'"

        match model, train, tokenizer with
        | Error e, _, _
        | _, Error e, _
        | _, _, Error e -> Error e
        | Ok model, Ok train, Ok tokenizer ->
            Ok
                {
                    Model = model
                    Train = train
                    Tokenizer = tokenizer
                    Step = root.["step"].GetValue<int>()
                    RngState = UInt64.Parse(root.["rngState"].GetValue<string>())
                    TokensSeen = root.["tokensSeen"].GetValue<int64>()
                    ElapsedSeconds = root.["elapsedSeconds"].GetValue<float>()
                }

    /// SHA-256 (hex) over the metadata (but the digest itself) and each tensor's name, dtype, shape and
    /// bytes, tensors in name order.
    let private digest (metadata: Map<string, string>) (tensors: (string * torch.Tensor) list) : string =
        use hash = IncrementalHash.CreateHash HashAlgorithmName.SHA256

        let text (s: string) =
            hash.AppendData(Encoding.UTF8.GetBytes(s + "\n"))

        for KeyValue(k, v) in metadata do
            if k <> digestKey then
                text k
                text v

        for name, t in tensors |> List.sortWith (fun (a, _) (b, _) -> String.CompareOrdinal(a, b)) do
            text name
            text (string t.dtype)
            text (String.Join(",", t.shape))

            if t.NumberOfElements > 0L then
                hash.AppendData(Span.op_Implicit t.bytes)

        Convert.ToHexString(hash.GetHashAndReset())

    /// Saves `header` and the named tensors to `path` atomically.
    let save (path: string) (header: CheckpointHeader) (tensors: (string * torch.Tensor) list) : unit =
        let cpu = tensors |> List.map (fun (name, t) -> name, t.detach().contiguous().cpu())

        try
            for _, t in cpu do
                dtypeName t.dtype |> ignore // refuses the dtypes checkpoints do not store

            let metadata = Map [ "format", "pt"; headerKey, (headerJson header).ToJsonString() ]

            AtomicFile.ensureFolderOf path
            LongNet.Interop.SafeTensors.write path cpu (metadata.Add(digestKey, digest metadata cpu))
        finally
            for _, t in cpu do
                t.Dispose()

    let private corrupt (path: string) (why: string) =
        Error
            $"checkpoint '{path}' is damaged or not a LongNet checkpoint ({why}); use another checkpoint or train again."

    /// The file at `path`, or the error a missing one gets.
    let private existing (path: string) : Result<unit, string> =
        if File.Exists path then
            Ok()
        elif Directory.Exists path then
            let inside = Path.Combine(path, "checkpoint.ckpt")
            Error $"checkpoint '{path}' is a folder; give the checkpoint file inside it (e.g. '{inside}')."
        else
            Error
                $"checkpoint '{path}' does not exist; train a model first (a training run writes checkpoint.ckpt into its run folder)."

    /// Whether the file at `path` has the earlier layout (it starts with the magic bytes).
    let private isLegacy (path: string) : bool =
        use stream = File.OpenRead path
        let start = Array.zeroCreate<byte> magic.Length

        stream.ReadAtLeast(start.AsSpan(), magic.Length, false) = magic.Length
        && start.AsSpan().SequenceEqual(magic)

    /// Loads a checkpoint of the earlier layout.
    let private loadLegacy (path: string) : Result<LoadedCheckpoint, string> =
        let bytes =
            try
                Ok(File.ReadAllBytes path)
            with e ->
                Error $"checkpoint '{path}' cannot be read: {e.Message}"

        match bytes with
        | Error e -> Error e
        | Ok bytes when bytes.Length < magic.Length + 4 + 32 -> corrupt path "too short"
        | Ok bytes ->
            let body = bytes.Length - 32

            if not (SHA256.HashData(bytes.AsSpan(0, body)).AsSpan().SequenceEqual(ReadOnlySpan(bytes, body, 32))) then
                corrupt path "checksum mismatch: the file is truncated or altered"
            else
                try
                    let headerLength = BitConverter.ToInt32(bytes, magic.Length)
                    let blob = magic.Length + 4 + headerLength

                    let root =
                        JsonNode.Parse(Encoding.UTF8.GetString(bytes, magic.Length + 4, headerLength)).AsObject()

                    match headerOfJson root with
                    | Error e -> corrupt path e
                    | Ok header ->
                        let tensors =
                            [
                                for entry in root.["tensors"].AsArray() do
                                    let name = entry.["name"].GetValue<string>()

                                    let shape = entry.["shape"].AsArray() |> Seq.map _.GetValue<int64>() |> Array.ofSeq

                                    let offset = entry.["offset"].GetValue<int64>()
                                    let length = entry.["length"].GetValue<int64>()

                                    let dtype =
                                        match dtypeOf (entry.["dtype"].GetValue<string>()) with
                                        | Some d -> d
                                        | None -> failwith $"tensor '{name}' has an unknown dtype"

                                    if int64 blob + offset + length > int64 body then
                                        failwith $"tensor '{name}' lies past the end of the data"

                                    let t = torch.empty (shape, dtype = dtype)

                                    if length <> t.NumberOfElements * int64 t.ElementSize then
                                        t.Dispose()
                                        failwith $"tensor '{name}' has {length} bytes for shape {shape}"

                                    if length > 0L then
                                        bytes.AsSpan(blob + int offset, int length).CopyTo(t.bytes)

                                    name, t.DetachFromDisposeScope()
                            ]

                        Ok
                            {
                                Header = header
                                Tensors = Map.ofList tensors
                            }
                with e ->
                    corrupt path e.Message

    /// The header of a safetensors checkpoint (reading only the file's header), or why it is none.
    let private safeTensorsHeader
        (path: string)
        : Result<LongNet.Interop.SafeTensors.Header * CheckpointHeader, string> =
        try
            let file = LongNet.Interop.SafeTensors.readHeader path

            match file.Metadata.TryFind headerKey, file.Metadata.TryFind digestKey with
            | Some json, Some _ ->
                match headerOfJson (JsonNode.Parse(json).AsObject()) with
                | Ok h -> Ok(file, h)
                | Error e -> corrupt path e
            | _ ->
                corrupt
                    path
                    "a safetensors file without LongNet's header; for a Hugging Face folder use `longnet import`"
        with
        | :? OutOfMemoryException -> reraise ()
        | e -> corrupt path e.Message

    /// Loads a checkpoint; errors name the file and what is wrong with it. Tensors are mapped from the
    /// file where its layout allows (copy-on-write: the file never changes), else read.
    let load (path: string) : Result<LoadedCheckpoint, string> =
        existing path
        |> Result.bind (fun () ->
            if isLegacy path then
                loadLegacy path
            else
                safeTensorsHeader path
                |> Result.bind (fun (file, header) ->
                    try
                        let tensors =
                            LongNet.Interop.SafeTensors.loadWith
                                LongNet.Interop.SafeTensors.MapWherePossible
                                path
                                None

                        let detached = tensors |> List.map (fun (n, t) -> n, t.DetachFromDisposeScope())

                        let matches =
                            try
                                digest file.Metadata detached = file.Metadata.[digestKey]
                            with _ ->
                                false

                        if not matches then
                            for _, t in detached do
                                t.Dispose()

                            corrupt path "checksum mismatch: the file is truncated or altered"
                        else
                            Ok
                                {
                                    Header = header
                                    Tensors = Map.ofList detached
                                }
                    with
                    | :? OutOfMemoryException -> reraise ()
                    | e -> corrupt path e.Message))

    /// Copies the stored "model.<name>" tensors into the model's parameters; fails naming the first
    /// missing, mis-shaped or unknown one, and then leaves every parameter as it was. Low-rank adapters
    /// the checkpoint lacks (fine-tuning a model that had none) keep their initial values; adapters the
    /// model lacks are refused (dropping them would silently change the model).
    let loadWeights (model: LongNetModel) (tensors: Map<string, torch.Tensor>) : Result<unit, string> =
        use _ = torch.no_grad ()
        let parameters = [ for struct (name, p) in model.named_parameters () -> name, p ]

        let problems =
            [
                for name, p in parameters do
                    match tensors.TryFind $"model.{name}" with
                    | None when Lora.isAdapterParameter name -> ()
                    | None -> $"the checkpoint lacks the weight '{name}'"
                    | Some t when t.shape <> p.shape ->
                        $"the weight '{name}' has shape {String.Join('×', t.shape)} in the checkpoint and {String.Join('×', p.shape)} in the model"
                    | Some _ -> ()

                let own = set [ for name, _ in parameters -> $"model.{name}" ]

                for KeyValue(stored, _) in tensors do
                    if stored.StartsWith "model." && not (own.Contains stored) then
                        if Lora.isAdapterParameter stored then
                            $"the checkpoint has the low-rank adapter '{stored.Substring 6}', which this model lacks (give the same lora settings, or export the checkpoint to merge its adapters)"
                        else
                            $"the checkpoint has the weight '{stored.Substring 6}', which this model lacks"
            ]

        match problems with
        | [] ->
            for name, p in parameters do
                match tensors.TryFind $"model.{name}" with
                | Some t -> p.copy_ t |> ignore
                | None -> ()

            Ok()
        | first :: _ -> Error first

    /// `use_` applied to the tensors of the checkpoint at `path` (disposed afterwards), or the load error.
    let withTensors (path: string) (use_: Map<string, torch.Tensor> -> 'T) : Result<'T, string> =
        load path
        |> Result.map (fun loaded ->
            try
                use_ loaded.Tensors
            finally
                for KeyValue(_, t) in loaded.Tensors do
                    t.Dispose())

    /// The header of the checkpoint at `path` (its model, training and tokenizer configuration), or the
    /// load error; reads only the file's header (the tensors and their digest are checked by `load`).
    let readHeader (path: string) : Result<CheckpointHeader, string> =
        existing path
        |> Result.bind (fun () ->
            if isLegacy path then
                load path
                |> Result.map (fun loaded ->
                    for KeyValue(_, t) in loaded.Tensors do
                        t.Dispose()

                    loaded.Header)
            else
                safeTensorsHeader path |> Result.map snd)

    /// The model's parameters as checkpoint tensors "model.<name>".
    let weights (model: LongNetModel) : (string * torch.Tensor) list =
        [
            for struct (name, p) in model.named_parameters () -> $"model.{name}", p :> torch.Tensor
        ]

    /// Loads a checkpoint's model (weights only, in eval mode), its tokenizer and its header; the
    /// stored tensors are freed before returning. Errors say what is wrong with the file.
    let loadModel (path: string) : Result<LongNetModel * ITokenizer * CheckpointHeader, string> =
        Native.ensureLoaded () |> ignore

        load path
        |> Result.bind (fun loaded ->
            try
                Tokenizer.ofSpec loaded.Header.Tokenizer
                |> Result.bind (fun tokenizer ->
                    let model = new LongNetModel(loaded.Header.Model)

                    match loadWeights model loaded.Tensors with
                    | Ok() ->
                        model.eval ()
                        Ok(model, tokenizer, loaded.Header)
                    | Error e ->
                        model.Dispose()
                        Error $"checkpoint '{path}' does not match its own configuration ({e}); it is damaged.")
            finally
                for KeyValue(_, t) in loaded.Tensors do
                    t.Dispose())

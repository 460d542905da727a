/// Hugging Face checkpoint folders: `model.safetensors`, or shards listed by the `weight_map` of
/// `model.safetensors.index.json` (tensor name → shard file). Finds which layout a folder has and loads
/// named tensors from the right files through `SafeTensors`, mapped where possible. Every missing file,
/// truncated shard or inconsistent index is reported naming the index, the shard and the tensor.
module LongNet.Interop.SafeTensorsFolder

open System
open System.Collections.Generic
open System.IO
open System.Text.Json
open TorchSharp
open LongNet.Interop

/// The file of a single-file Hugging Face checkpoint.
[<Literal>]
let SingleFileName = "model.safetensors"

/// The index of a sharded Hugging Face checkpoint.
[<Literal>]
let IndexFileName = "model.safetensors.index.json"

/// Where a Hugging Face checkpoint folder keeps its tensors.
type Checkpoint =
    /// One file (`model.safetensors`, its full path here) holds every tensor.
    | SingleFile of path: string
    /// An index (its full path) maps each tensor name to the full path of the shard that holds it.
    | Sharded of indexPath: string * shards: Map<string, string>

let private failIndex (path: string) (problem: string) : 'T =
    raise (InvalidDataException $"Cannot read safetensors index '{path}': {problem}.")

/// The `weight_map` of the index file at `indexPath` (`model.safetensors.index.json`): for each tensor
/// name, the full path of its shard, which must lie in the index's folder. Raises FileNotFoundException
/// if the index is missing and InvalidDataException naming it (and the tensor) if it is not JSON, lacks
/// `weight_map`, or maps a tensor to something other than a file name inside the folder. Whether the
/// shards exist is checked when they are loaded.
let readIndex (indexPath: string) : Map<string, string> =
    if String.IsNullOrWhiteSpace indexPath then
        invalidArg "indexPath" "indexPath must name an index file, got an empty string."

    if not (File.Exists indexPath) then
        raise (FileNotFoundException($"Cannot read safetensors index '{indexPath}': it does not exist.", indexPath))

    let folder = Path.GetDirectoryName(Path.GetFullPath indexPath)

    let doc =
        try
            JsonDocument.Parse(File.ReadAllBytes indexPath |> ReadOnlyMemory)
        with :? JsonException as e ->
            failIndex indexPath $"it is not valid JSON ({e.Message})"

    use _doc = doc

    if doc.RootElement.ValueKind <> JsonValueKind.Object then
        failIndex indexPath "it is not a JSON object"

    let mutable weightMap = Unchecked.defaultof<JsonElement>

    if not (doc.RootElement.TryGetProperty("weight_map", &weightMap)) then
        failIndex indexPath "it has no 'weight_map'"

    if weightMap.ValueKind <> JsonValueKind.Object then
        failIndex indexPath "its 'weight_map' is not an object"

    weightMap.EnumerateObject()
    |> Seq.fold
        (fun (acc: Map<string, string>) p ->
            if acc.ContainsKey p.Name then
                failIndex indexPath $"'weight_map' names tensor '{p.Name}' twice"

            if p.Value.ValueKind <> JsonValueKind.String then
                failIndex indexPath $"'weight_map' maps tensor '{p.Name}' to {p.Value.GetRawText()}, not a file name"

            let shard = p.Value.GetString()

            let full =
                if String.IsNullOrWhiteSpace shard || Path.IsPathRooted shard then
                    None
                else
                    let f = Path.GetFullPath(Path.Combine(folder, shard))

                    if Path.GetDirectoryName f = folder then Some f else None

            match full with
            | None ->
                failIndex
                    indexPath
                    $"'weight_map' maps tensor '{p.Name}' to '{shard}', which is not a file in the index's folder"
            | Some f -> acc.Add(p.Name, f))
        Map.empty

/// The checkpoint of a Hugging Face folder: `model.safetensors` if present, else the shards listed by
/// `model.safetensors.index.json` (the order transformers uses). Raises DirectoryNotFoundException for
/// a missing folder, FileNotFoundException naming the folder if it has neither file, and the errors of
/// `readIndex`.
let find (folder: string) : Checkpoint =
    if String.IsNullOrWhiteSpace folder then
        invalidArg "folder" "folder must name a checkpoint folder, got an empty string."

    if not (Directory.Exists folder) then
        raise (DirectoryNotFoundException $"Cannot load checkpoint folder '{folder}': it does not exist.")

    let full = Path.GetFullPath folder
    let single = Path.Combine(full, SingleFileName)
    let index = Path.Combine(full, IndexFileName)

    if File.Exists single then
        SingleFile single
    elif File.Exists index then
        Sharded(index, readIndex index)
    else
        raise (
            FileNotFoundException(
                $"Cannot load checkpoint folder '{folder}': it has neither '{SingleFileName}' nor '{IndexFileName}'.",
                single
            )
        )

/// Loads the named tensors (or all for None) of a sharded checkpoint, each from its shard.
let private loadSharded
    (indexPath: string)
    (shards: Map<string, string>)
    (names: string list option)
    : (string * torch.Tensor) list =
    let wanted =
        match names with
        | None -> shards |> Map.toList |> List.map fst
        | Some ns -> List.distinct ns

    let located =
        wanted
        |> List.map (fun n ->
            if isNull n then
                invalidArg "names" $"Cannot load the checkpoint of '{indexPath}': a requested tensor name is null."

            match shards.TryFind n with
            | Some shard -> n, shard
            | None ->
                raise (KeyNotFoundException $"Cannot load tensor '{n}': the index '{indexPath}' does not name it."))

    for n, shard in located do
        if not (File.Exists shard) then
            raise (
                FileNotFoundException(
                    $"Cannot load tensor '{n}': the index '{indexPath}' maps it to the shard '{Path.GetFileName shard}', which does not exist.",
                    shard
                )
            )

    // every shard's header is read and checked before the first tensor is loaded
    let plan =
        located
        |> List.groupBy snd
        |> List.map (fun (shard, xs) ->
            let present =
                (SafeTensors.readHeader shard).Entries |> List.map (fun e -> e.Name) |> set

            for n, _ in xs do
                if not (present.Contains n) then
                    raise (
                        InvalidDataException
                            $"Cannot load tensor '{n}': the index '{indexPath}' maps it to the shard '{shard}', which has no tensor of that name."
                    )

            shard, List.map fst xs)

    let loaded = ResizeArray<string * torch.Tensor>()

    try
        for shard, shardNames in plan do
            loaded.AddRange(SafeTensors.loadWith SafeTensors.MapWherePossible shard (Some shardNames))
    with _ ->
        for _, t in loaded do
            t.Dispose()

        reraise ()

    let byName = Map.ofSeq loaded
    wanted |> List.map (fun n -> n, byName.[n])

let private loadFrom (folder: string) (names: string list option) : (string * torch.Tensor) list =
    match find folder with
    | SingleFile path -> SafeTensors.loadWith SafeTensors.MapWherePossible path names
    | Sharded(index, shards) -> loadSharded index shards names

/// Loads the tensors named by `names` (in that order; repeats loaded once) of the Hugging Face
/// checkpoint folder `folder` (see `find`), each from the file that holds it, mapped where possible as
/// in `SafeTensors.loadWith`; the tensors are the caller's to dispose. Raises FileNotFoundException
/// naming the index, tensor and shard for a shard that does not exist, KeyNotFoundException naming the
/// file or index and the tensor for a tensor the checkpoint lacks, InvalidDataException naming the
/// index, tensor and shard for a tensor the index names but its shard lacks, and the errors of
/// `SafeTensors.readHeader` (naming the shard and, where one is involved, the tensor) for a truncated or
/// malformed shard. Every header is checked before any tensor is loaded; on any error no tensor is left
/// allocated.
let load (folder: string) (names: string list) : (string * torch.Tensor) list =
    if isNull (box names) then
        nullArg "names"

    loadFrom folder (Some names)

/// Every tensor of the checkpoint folder `folder` (a single file's in data order, a sharded
/// checkpoint's sorted by name), with the errors of `load`.
let loadAll (folder: string) : (string * torch.Tensor) list = loadFrom folder None

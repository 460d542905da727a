/// Checkpoints are safetensors files: any safetensors reader finds the weights ("model.*"), the
/// optimizer state ("optim.*") and LongNet's header in the metadata; checkpoints of the earlier layout
/// (the shipped demo base is one) still load.
[<Xunit.Collection("serial")>]
module LongNet.Tests.CheckpointFormatTests

open System.IO
open System.Text.Json.Nodes
open Xunit
open TorchSharp
open LongNet
open LongNet.Interop
open LongNet.Training
open LongNet.Tests.TestSupport

[<Fact>]
let ``a checkpoint is a safetensors file holding the weights, the optimizer state and the header`` () =
    Native.ensureLoaded () |> ignore
    use scope = torch.NewDisposeScope()
    use dir = new TempDir "checkpoint-format"
    let _, checkpoint = trainTiny dir "safetensors all the way down." 2
    let file = SafeTensors.readHeader checkpoint
    Assert.Equal(Some "pt", file.Metadata.TryFind "format")
    let header = JsonNode.Parse(file.Metadata.["longnet.checkpoint"]).AsObject()
    let loaded0 = Checkpoint.load checkpoint |> Result.defaultWith failwith
    Assert.Equal(2, header.["step"].GetValue<int>())
    Assert.Equal(loaded0.Header.Model.VocabSize, header.["model"].["vocabSize"].GetValue<int>())
    let names = file.Entries |> List.map _.Name
    Assert.Contains("model.embed_tokens.weight", names)
    Assert.Contains(names, fun n -> n.StartsWith "optim.first.")
    // the weights a generic reader gets are the ones the checkpoint loads into the model
    let generic =
        SafeTensors.loadWith SafeTensors.CopyAlways checkpoint None |> Map.ofList

    for KeyValue(name, t) in loaded0.Tensors do
        let other = generic.[name]
        Assert.True(t.shape = other.shape && t.dtype = other.dtype && t.eq(other).all().item<bool>(), name)
        t.Dispose()

[<Fact>]
let ``a checkpoint of the earlier layout still loads`` () =
    Native.ensureLoaded () |> ignore
    use dir = new TempDir "checkpoint-legacy"
    let path = dir.File "base.ckpt"
    Assert.True(LongNet.Experiments.Demo.extractBase path)
    Assert.Equal<byte[]>("LNCKPT01"B, File.ReadAllBytes(path).[..7])
    let loaded = Checkpoint.load path |> Result.defaultWith failwith
    Assert.True((RunConfig.longContext.Model.Groups = loaded.Header.Model.Groups))
    Assert.True(loaded.Tensors.ContainsKey "model.embed_tokens.weight")

    for KeyValue(_, t) in loaded.Tensors do
        t.Dispose()

    Assert.Equal(loaded.Header.Step, (Checkpoint.readHeader path |> Result.defaultWith failwith).Step)

[<Fact>]
let ``a changed tensor byte or a changed header value is refused as damaged`` () =
    Native.ensureLoaded () |> ignore
    use dir = new TempDir "checkpoint-tamper"
    let _, checkpoint = trainTiny dir "every byte counts." 1
    let bytes = File.ReadAllBytes checkpoint
    let headerLength = int (System.BitConverter.ToUInt64(bytes, 0))
    // the last data byte (inside the last tensor), flipped
    let data = Array.copy bytes
    data.[data.Length - 1] <- data.[data.Length - 1] ^^^ 0x40uy
    // the step in the LongNet header, 1 → 7: the JSON stays valid and the same length
    let header = Array.copy bytes
    let text = System.Text.Encoding.UTF8.GetString(header, 8, headerLength)
    let at = text.IndexOf "\\\"step\\\":1"
    Assert.True(at > 0, "the header holds the step")
    header.[8 + at + 9] <- byte '7'

    for name, altered in [ "data.ckpt", data; "header.ckpt", header ] do
        let path = dir.File name
        File.WriteAllBytes(path, altered)

        match Checkpoint.load path with
        | Ok _ -> failwith $"{name} loaded"
        | Error e -> Assert.Contains("damaged", e)

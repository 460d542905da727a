/// The CASM commands end to end: `longnet train --task passkey` with select-merge attention and CRD NTK
/// (draw log, checkpoint usable by `passkey` and `generate`), bad attention/scaling flags exit 2,
/// `longnet passkey --scaling`, the `bench --impls selectmerge` row, and a seconds-long miniature of
/// `longnet passkey-study` writing its results, table and heatmaps.
[<Xunit.Collection("serial")>]
module LongNet.Tests.CasmCliTests

open System
open System.IO
open System.Text.Json.Nodes
open Xunit
open LongNet.Cli
open LongNet.Tests.TestSupport

[<Fact>]
let ``train --task passkey with select-merge and CRD NTK logs its draws; passkey and generate use the checkpoint`` () =
    use tempDir = new TempDir("casm")
    let dir = tempDir.Path
    let baseRun = Path.Combine(dir, "base")

    let common =
        [
            "--task"
            "passkey"
            "--preset"
            "tiny"
            "--seq-len"
            "128"
            "--attention"
            "select-merge"
            "--block-size"
            "16"
            "--top-k"
            "2"
        ]

    let code, stdout, stderr =
        capture Train.run (common @ [ "--out"; baseRun; "--steps"; "2" ])

    Assert.True((code = 0), stderr)
    Assert.Contains("select-merge (block 16, top-2, merge 1, sink, renumbered) attention, scaling none", stdout)

    let crdRun = Path.Combine(dir, "crd")

    let code, stdout, stderr =
        capture
            Train.run
            (common
             @ [
                 "--out"
                 crdRun
                 "--steps"
                 "3"
                 "--scaling"
                 "crd-ntk"
                 "--crd-max-scale"
                 "8"
                 "--crd-min-length"
                 "110"
                 "--init"
                 Path.Combine(baseRun, "checkpoint.ckpt")
             ])

    Assert.True((code = 0), stderr)
    Assert.Contains("starting from the weights of", stdout)
    let draws = File.ReadAllLines(Path.Combine(crdRun, "crd_log.csv"))
    Assert.Equal("step,micro_batch,scale,offset,length,split,gap", draws.[0])
    Assert.Equal(4, draws.Length)

    // a passkey run that starts from a checkpoint without a configuration: its tokenizer and model from
    // there, the attention switched to select-merge with the trainable selection
    let trainableRun = Path.Combine(dir, "trainable")

    let code, stdout, stderr =
        capture
            Train.run
            [
                "--task"
                "passkey"
                "--init"
                Path.Combine(baseRun, "checkpoint.ckpt")
                "--out"
                trainableRun
                "--selection"
                "trainable"
                "--local-blocks"
                "1"
                "--steps"
                "2"
            ]

    Assert.True((code = 0), stderr)
    Assert.Contains("1 local, sink, renumbered, trainable selection", stdout)

    let config = JsonNode.Parse(File.ReadAllText(Path.Combine(crdRun, "config.json")))
    Assert.Equal("crd-ntk", config.["model"].["positionScaling"].["method"].GetValue<string>())
    Assert.Equal("select-merge", config.["model"].["attention"].GetValue<string>())
    Assert.Equal("passkey", config.["train"].["task"].GetValue<string>())
    let checkpoint = Path.Combine(crdRun, "checkpoint.ckpt")
    let json = Path.Combine(dir, "passkey.json")

    let code, _, stderr =
        capture
            Passkey.run
            [
                "--checkpoint"
                checkpoint
                "--lengths"
                "128,256"
                "--depths"
                "0.5"
                "--trials"
                "1"
                "--json"
                json
            ]

    Assert.True((code = 0), stderr)
    Assert.Equal(2, (JsonNode.Parse(File.ReadAllText json).["cells"] :?> JsonArray).Count)

    let code, _, stderr =
        capture
            Generate.run
            [
                "--checkpoint"
                checkpoint
                "--prompt"
                "The pass key is"
                "--max-new-tokens"
                "4"
                "--greedy"
            ]

    Assert.True((code = 0), stderr)
    Assert.Equal("", stderr)

    let code, _, stderr =
        capture
            Passkey.run
            [
                "--checkpoint"
                Path.Combine(baseRun, "checkpoint.ckpt")
                "--lengths"
                "256"
                "--depths"
                "0"
                "--trials"
                "1"
                "--scaling"
                "yarn"
            ]

    Assert.True((code = 0), stderr)

    let code, _, stderr =
        capture Passkey.run [ "--checkpoint"; checkpoint; "--lengths"; "256"; "--scaling"; "rope2" ]

    Assert.Equal(2, code)
    Assert.Contains("--scaling", stderr)

    // a prompt past the model's positions is refused before any forward, naming --lengths
    let code, _, stderr =
        capture Passkey.run [ "--checkpoint"; checkpoint; "--lengths"; "256,2000000"; "--trials"; "1" ]

    Assert.Equal(2, code)
    Assert.Contains("--lengths", stderr)
    Assert.Contains("maxPositions", stderr)

    // the same weights with the trainable selection and a local block
    let code, stdout, stderr =
        capture
            Passkey.run
            [
                "--checkpoint"
                checkpoint
                "--lengths"
                "256"
                "--depths"
                "1"
                "--trials"
                "1"
                "--selection"
                "trainable"
                "--local-blocks"
                "1"
            ]

    Assert.True((code = 0), stderr)
    Assert.Contains("1 local, sink, renumbered, trainable selection", stdout)

    let code, _, stderr =
        capture Passkey.run [ "--checkpoint"; checkpoint; "--lengths"; "256"; "--selection"; "learned" ]

    Assert.Equal(2, code)
    Assert.Contains("--selection", stderr)

[<Theory>]
[<InlineData("--attention", "sparse")>]
[<InlineData("--scaling", "linear")>]
[<InlineData("--scale", "0.5")>]
[<InlineData("--block-size", "0")>]
[<InlineData("--top-k", "-1")>]
[<InlineData("--task", "qa")>]
let ``train rejects a bad attention, scaling or task flag with exit 2 naming it`` (flag: string, value: string) =
    use tempDir = new TempDir("casm")
    let dir = tempDir.Path

    let task = if flag = "--task" then [] else [ "--task"; "passkey" ]

    let code, _, stderr =
        capture Train.run (task @ [ "--preset"; "tiny"; "--out"; Path.Combine(dir, "run"); flag; value ])

    Assert.Equal(2, code)
    Assert.Contains(flag, stderr)
    Assert.False(File.Exists(Path.Combine(dir, "run", "checkpoint.ckpt")))

[<Fact>]
let ``bench --impls selectmerge adds a row with the pairs of the select-merge plan`` () =
    use tempDir = new TempDir("casm")
    let dir = tempDir.Path
    let json = Path.Combine(dir, "bench.json")

    let code, stdout, stderr =
        capture
            Bench.run
            [
                "--n"
                "96"
                "--modes"
                "fwd"
                "--impls"
                "selectmerge,dense"
                "--segments"
                "32"
                "--rates"
                "1"
                "--heads"
                "2"
                "--head-dim"
                "8"
                "--repeats"
                "1"
                "--block-size"
                "16"
                "--top-k"
                "2"
                "--causal"
                "--json"
                json
            ]

    Assert.True((code = 0), stderr)
    Assert.Contains("selectmerge", stdout)

    let row =
        (JsonNode.Parse(File.ReadAllText json).["results"] :?> JsonArray)
        |> Seq.find (fun r -> r.["impl"].GetValue<string>() = "selectmerge")

    let plan = LongNet.Casm.SelectMergeConfig.create 16 2 1 true true false
    Assert.Equal(2L * LongNet.Casm.SelectMergePlan.pairCount plan 96, row.["pairs"].GetValue<int64>())

    let refused =
        try
            Bench.run [ "--impls"; "sparse" ] |> ignore
            ""
        with Args.UsageError message ->
            message

    Assert.Contains("--impls", refused)

[<Fact>]
let ``a miniature passkey study writes its results, table and heatmaps`` () =
    use tempDir = new TempDir("casm")
    let out = Path.Combine(tempDir.Path, "passkey")

    let code, _, stderr =
        capture
            PasskeyStudy.run
            [
                "--out"
                out
                "--train-length"
                "112"
                "--factors"
                "1,2"
                "--depths"
                "0.5"
                "--trials"
                "1"
                "--steps"
                "2"
                "--crd-steps"
                "2"
                "--sparse-steps"
                "3"
                "--attentions"
                "select-merge-trainable,select-merge,dense,dilated"
                "--embed"
                "8"
                "--heads"
                "2"
                "--layers"
                "1"
                "--batch"
                "2"
            ]

    Assert.True((code = 0), stderr)
    let results = JsonNode.Parse(File.ReadAllText(Path.Combine(out, "results.json")))
    let rows = results.["rows"] :?> JsonArray
    Assert.Equal(4 * PasskeyStudy.scalings.Length, rows.Count)

    for r in rows do
        Assert.Equal(2, (r.["cells"] :?> JsonArray).Count)

    let table = File.ReadAllText(Path.Combine(out, "results.md"))
    Assert.Contains("| select-merge | crd-ntk |", table)
    Assert.Contains("224 (2×)", table)
    Assert.True(File.Exists(Path.Combine(out, "heatmap-select-merge-crd-ntk.png")))
    Assert.True(File.Exists(Path.Combine(out, "runs", "dense-crd", "crd_log.csv")))
    // the select-merge models continue the dense base for --sparse-steps steps, with their own selection
    let trainable =
        File.ReadAllText(Path.Combine(out, "runs", "select-merge-trainable-base", "config.json"))

    Assert.Contains("\"selection\": \"trainable\"", trainable)
    Assert.Contains("\"steps\": 3", trainable)
    Assert.Contains("\"seqLen\": 224", trainable)

[<Fact>]
let ``the study's dilated model has geometric groups from T/4, rates capped at the heads, until a segment holds the longest prompt``
    ()
    =
    let m = PasskeyStudy.modelFor "dilated" 256 (4096 + 8) 64 2 4 16 4 1
    Assert.Equal<int list>([ 64; 128; 256; 512; 1024; 2048; 4096; 8192 ], m.Groups |> List.map _.SegmentLength)
    Assert.Equal<int list>([ 1; 2; 4; 4; 4; 4; 4; 4 ], m.Groups |> List.map _.DilationRate)
    // a segment of exactly 256 would start a new segment at the first answer token of a 256-token prompt
    let short = PasskeyStudy.modelFor "dilated" 256 (256 + 8) 64 2 4 16 4 1
    Assert.Equal<int list>([ 64; 128; 256; 512 ], short.Groups |> List.map _.SegmentLength)

[<Fact>]
let ``the documented CRD fine-tune command trains passkey samples without --crd-min-length`` () =
    use tempDir = new TempDir("casm")
    let dir = tempDir.Path
    let out = Path.Combine(dir, "sm-crd")

    // docs/casm.md's fine-tune line (without --init), with one step
    let code, _, stderr =
        capture
            Train.run
            [
                "--task"
                "passkey"
                "--preset"
                "tiny"
                "--seq-len"
                "256"
                "--out"
                out
                "--attention"
                "select-merge"
                "--block-size"
                "16"
                "--top-k"
                "4"
                "--scaling"
                "crd-ntk"
                "--crd-max-scale"
                "16"
                "--steps"
                "1"
            ]

    Assert.True((code = 0), stderr)
    let config = JsonNode.Parse(File.ReadAllText(Path.Combine(out, "config.json")))

    let minimum =
        LongNet.Text.Passkey.minimumSampleLength (LongNet.Text.Tokenizer.byteLevel ())

    Assert.Equal(max 64 minimum, config.["model"].["positionScaling"].["crdMinLength"].GetValue<int>())

[<Fact>]
let ``a --crd-min-length below the shortest passkey sample exits 2 naming the flag`` () =
    use tempDir = new TempDir("casm")
    let dir = tempDir.Path

    let code, _, stderr =
        capture
            Train.run
            [
                "--task"
                "passkey"
                "--preset"
                "tiny"
                "--seq-len"
                "256"
                "--out"
                Path.Combine(dir, "run")
                "--scaling"
                "crd-ntk"
                "--crd-min-length"
                "10"
            ]

    Assert.Equal(2, code)
    Assert.Contains("--crd-min-length", stderr)

[<Theory>]
[<InlineData("--block-size 16", "--block-size")>]
[<InlineData("--attention dense --no-sink", "--no-sink")>]
[<InlineData("--attention dilated --original-positions", "--original-positions")>]
[<InlineData("--scale 2", "--scale")>]
[<InlineData("--scaling dynamic-ntk --scale 2", "--scale")>]
[<InlineData("--scaling crd-ntk --scale 2", "--scale")>]
[<InlineData("--trained-length 64", "--trained-length")>]
[<InlineData("--scaling ntk --scale 2 --crd-max-scale 4", "--crd-max-scale")>]
[<InlineData("--crd-cycle-steps 5", "--crd-cycle-steps")>]
let ``train refuses a flag that would do nothing, exit 2 naming it`` (args: string, flag: string) =
    use tempDir = new TempDir("casm")
    let dir = tempDir.Path

    let code, _, stderr =
        capture
            Train.run
            ([ "--task"; "passkey"; "--preset"; "tiny"; "--out"; Path.Combine(dir, "run") ]
             @ List.ofArray (args.Split ' '))

    Assert.Equal(2, code)
    Assert.Contains(flag, stderr)
    Assert.False(File.Exists(Path.Combine(dir, "run", "checkpoint.ckpt")))

[<Fact>]
let ``passkey --trained-length without --scaling exits 2 naming it`` () =
    let code, _, stderr =
        capture Passkey.run [ "--checkpoint"; "missing.ckpt"; "--lengths"; "128"; "--trained-length"; "64" ]

    Assert.Equal(2, code)
    Assert.Contains("--trained-length", stderr)

/// The byte-level tokenizer, recording every text it encodes (the prompts, with their pass keys).
type private Recording() =
    let inner = LongNet.Text.Tokenizer.byteLevel ()
    member val Texts = Collections.Generic.List<string>()

    interface LongNet.Text.ITokenizer with
        member _.Name = inner.Name
        member _.VocabSize = inner.VocabSize
        member _.EndOfText = inner.EndOfText
        member _.PromptStart = inner.PromptStart

        member t.Encode text =
            t.Texts.Add text
            inner.Encode text

        member _.Decode ids = inner.Decode ids
        member _.Spec = inner.Spec

[<Fact>]
let ``passkey --scaling none scores the same prompts and cells as the checkpoint's own scaling`` () =
    LongNet.Native.ensureLoaded () |> ignore
    TorchSharp.torch.manual_seed 3L |> ignore

    let config =
        { LongNet.Modules.ModelConfig.defaults with
            EmbedDim = 16
            Layers = 1
            Heads = 2
            FeedForwardDim = 24
            Groups = LongNet.Groups.ofPairsOrRaise [ 8, 1 ]
            VocabSize = 259
        }

    use model = new LongNet.Modules.LongNetModel(config)
    model.eval ()
    let weights = LongNet.Training.Checkpoint.weights model |> Map.ofList
    let lengths, depths = [ 120; 160 ], [ 0.0; 1.0 ]
    let own, scaled = Recording(), Recording()
    let ownCells = Passkey.evaluateFrom model own lengths depths 2 (System.Random 5)

    let scaledCells =
        Passkey.evaluateScaled config weights "none" 120 scaled lengths depths 2 5

    Assert.Equal<LongNet.Training.PasskeyCell list>(ownCells, scaledCells)
    Assert.True(own.Texts.Count >= 8)
    Assert.Equal<string seq>(own.Texts, scaled.Texts)

[<Fact>]
let ``passkey --attention evaluates a dense checkpoint's weights with select-merge, and refuses its options alone`` () =
    use tempDir = new TempDir("casm")
    let run = Path.Combine(tempDir.Path, "dense")

    let code, _, stderr =
        capture
            Train.run
            [
                "--task"
                "passkey"
                "--preset"
                "tiny"
                "--seq-len"
                "128"
                "--attention"
                "dense"
                "--steps"
                "2"
                "--out"
                run
            ]

    Assert.True((code = 0), stderr)
    let checkpoint = Path.Combine(run, "checkpoint.ckpt")
    let own, swapped = Path.Combine(run, "own.json"), Path.Combine(run, "swapped.json")

    let grid =
        [
            "--checkpoint"
            checkpoint
            "--lengths"
            "128,160"
            "--depths"
            "0,1"
            "--trials"
            "2"
        ]

    let code, stdout, stderr = capture Passkey.run (grid @ [ "--json"; own ])
    Assert.True((code = 0), stderr)
    Assert.DoesNotContain("evaluating with", stdout)

    // every block selected at original positions is dense attention: the same cells
    let code, stdout, stderr =
        capture
            Passkey.run
            (grid
             @ [
                 "--attention"
                 "select-merge"
                 "--block-size"
                 "16"
                 "--top-k"
                 "1000"
                 "--original-positions"
                 "--json"
                 swapped
             ])

    Assert.True((code = 0), stderr)

    Assert.Contains(
        "evaluating with select-merge (block 16, top-1000, merge 1, sink) attention, scaling none (trained with dense attention",
        stdout
    )

    let cells (path: string) =
        (JsonNode.Parse(File.ReadAllText path).["cells"]).ToJsonString()

    Assert.Equal(cells own, cells swapped)

    let code, _, stderr = capture Passkey.run (grid @ [ "--no-sink" ])
    Assert.Equal(2, code)
    Assert.Contains("--no-sink applies only to --attention select-merge", stderr)

    let code, _, stderr =
        capture Passkey.run (grid @ [ "--attention"; "select-merge"; "--block-size"; "0" ])

    Assert.Equal(2, code)
    Assert.Contains("--block-size", stderr)

[<Fact>]
let ``the study's table names a row that had to be evaluated twice`` () =
    let cell: LongNet.Training.PasskeyCell =
        {
            Length = 256
            Depth = 0.5
            Correct = 3
            Trials = 4
        }

    let row note : PasskeyStudy.Row =
        {
            Attention = "dilated"
            Scaling = "crd-ntk"
            Cells = [ cell ]
            Note = note
        }

    let plain = PasskeyStudy.markdown 256 [ 256 ] [ row None ]
    Assert.Contains("| dilated | crd-ntk | 75% |", plain)
    Assert.DoesNotContain("evaluated twice", plain)

    let retried =
        PasskeyStudy.markdown 256 [ 256 ] [ row (Some "evaluated twice: the first attempt failed in libtorch (x)") ]

    Assert.Contains("dilated / crd-ntk: evaluated twice", retried)

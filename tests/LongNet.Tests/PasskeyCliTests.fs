/// `longnet passkey` end to end on a tiny trained run: a table of lengths × depths, JSON and a heatmap;
/// bad depths exit 2 and a length shorter than the prompt frame exits 1 with one line naming it.
[<Xunit.Collection("serial")>]
module LongNet.Tests.PasskeyCliTests

open System
open System.IO
open System.Text.Json.Nodes
open Xunit
open LongNet.Cli
open LongNet.Tests.TestSupport

let private passkeyCorpus =
    "The sky is blue. The grass is green. The pass key is 12345."

[<Fact>]
let ``passkey prints a grid of accuracies and writes JSON and a heatmap`` () =
    use dir = new TempDir("passkey")
    let _, checkpoint = trainTiny dir passkeyCorpus 2
    let json = Path.Combine(dir.Path, "passkey.json")
    let png = Path.Combine(dir.Path, "passkey.png")

    let code, stdout, stderr =
        capture
            Passkey.run
            [
                "--checkpoint"
                checkpoint
                "--lengths"
                "120,160"
                "--depths"
                "0,0.5,1"
                "--trials"
                "2"
                "--json"
                json
                "--heatmap"
                png
            ]

    Assert.True((code = 0), stderr)
    Assert.Contains("depth \\ length", stdout)
    Assert.Equal(4, stdout.Trim().Split('\n').Length)
    let cells = (JsonNode.Parse(File.ReadAllText json)["cells"]).AsArray()
    Assert.Equal(6, cells.Count)

    for c in cells do
        Assert.Equal(2, c["trials"].GetValue<int>())

    Assert.True(File.Exists png || stderr.Contains "could not draw", stderr)

[<Fact>]
let ``passkey exits 2 on a depth outside 0 to 1 and 1 on a length shorter than the prompt frame`` () =
    let code, _, stderr =
        capture Passkey.run [ "--checkpoint"; "c"; "--lengths"; "100"; "--depths"; "0,1.5" ]

    Assert.Equal(2, code)
    Assert.Contains("--depths", stderr)

    use dir = new TempDir("passkey")
    let _, checkpoint = trainTiny dir passkeyCorpus 2

    let code, _, stderr =
        capture Passkey.run [ "--checkpoint"; checkpoint; "--lengths"; "20"; "--trials"; "1" ]

    Assert.Equal(1, code)
    Assert.Equal(1, stderr.Trim().Split('\n').Length)
    Assert.Contains("targetLength", stderr)

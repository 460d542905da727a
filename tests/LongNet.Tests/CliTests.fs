/// The `longnet` command, run in-process: `attend` against the reference vectors (float64) and the
/// library (float32), exit codes and messages for bad input, `--help` everywhere, `plan` output.
module LongNet.Tests.CliTests

open System
open System.IO
open Xunit
open TorchSharp
open LongNet
open LongNet.Tests.TestSupport

let private vectors = Path.Combine(AppContext.BaseDirectory, "vectors", "dilated")

let private maxAbs (a: torch.Tensor) (b: torch.Tensor) =
    (a - b).abs().max().to_type(torch.float64).item<float>()

[<Fact>]
let ``attend reproduces the reference output and gradients in float64`` () =
    Native.ensureLoaded () |> ignore
    use _scope = torch.NewDisposeScope()
    use dir = new TempDir("cli")

    let file name =
        Path.Combine(vectors, $"p02_b2_n100_h3_causal.{name}.npy")

    let out = Path.Combine(dir.Path, "out.npy")

    let code, _, err =
        longnet
            [
                "attend"
                "--q"
                file "q"
                "--k"
                file "k"
                "--v"
                file "v"
                "--segments"
                "8,24,50"
                "--rates"
                "1,3,5"
                "--causal"
                "--offsets"
                "paper"
                "--out"
                out
                "--dout"
                file "dout"
                "--grads"
                Path.Combine(dir.Path, "g")
            ]

    Assert.True((code = 0), err)
    let written = Npy.readTensor out
    Assert.Equal(torch.ScalarType.Float64, written.dtype)
    Assert.True(maxAbs written (Npy.readTensor (file "exp_paper")) < 1e-12)

    for g in [ "dq"; "dk"; "dv" ] do
        let actual = Npy.readTensor (Path.Combine(dir.Path, $"g.{g}.npy"))
        Assert.True(maxAbs actual (Npy.readTensor (file $"expgrad_paper_{g}")) < 1e-12, g)

[<Fact>]
let ``attend computes in float32 for float32 files and agrees with the library`` () =
    Native.ensureLoaded () |> ignore
    use _scope = torch.NewDisposeScope()
    use dir = new TempDir("cli")
    let path name = Path.Combine(dir.Path, $"{name}.npy")
    let make () = torch.randn (2L, 97L, 3L, 5L) // [batch, seq, heads, headDim], odd sizes
    let q, k, v = make (), make (), make ()

    for name, t in [ "q", q; "k", k; "v", v ] do
        Npy.writeTensor (path name) t

    let code, _, err =
        longnet
            [
                "attend"
                "--q"
                path "q"
                "--k"
                path "k"
                "--v"
                path "v"
                "--segments"
                "16,40"
                "--rates"
                "1,4"
                "--out"
                path "out"
            ]

    Assert.True((code = 0), err)
    let written = Npy.readTensor (path "out")
    Assert.Equal(torch.ScalarType.Float32, written.dtype)
    let config = DilatedConfig.createOrRaise [ 16; 40 ] [ 1; 4 ] Paper false None

    let expected =
        DilatedAttention.forward config (Inputs.bshdToBhsd q) (Inputs.bshdToBhsd k) (Inputs.bshdToBhsd v)

    Assert.True(maxAbs written (Inputs.bhsdToBshd expected) < 1e-6)

[<Fact>]
let ``attend warns on stderr when a configuration leaves positions uncovered`` () =
    Native.ensureLoaded () |> ignore
    use dir = new TempDir("cli")
    let path name = Path.Combine(dir.Path, $"{name}.npy")

    for name in [ "q"; "k"; "v" ] do
        Npy.writeTensor (path name) (torch.randn (1L, 20L, 2L, 4L))

    // one group with r = 4 and only 2 heads: offsets 2 and 3 are used by no head
    let code, _, err =
        longnet
            [
                "attend"
                "--q"
                path "q"
                "--k"
                path "k"
                "--v"
                path "v"
                "--segments"
                "8"
                "--rates"
                "4"
                "--out"
                path "out"
            ]

    Assert.Equal(0, code)
    Assert.Contains("warning", err)
    Assert.Contains("uncovered", err.Replace("covered by no group", "uncovered"))

[<Theory>]
[<InlineData("--rates 3 --segments 2", "--rates")>]
[<InlineData("--rates 0 --segments 8", "--rates")>]
[<InlineData("--rates 1,2 --segments 8", "--rates")>]
[<InlineData("--rates 1,1 --segments 8,8", "--segments")>]
[<InlineData("--rates 1 --segments x", "--segments")>]
[<InlineData("--rates 1 --segments 8 --offsets diagonal", "--offsets")>]
[<InlineData("--rates 1 --segments 8 --scale -1", "--scale")>]
let ``attend rejects a bad configuration with exit code 2 naming the option`` (options: string, named: string) =
    use dir = new TempDir("cli")
    let missing = Path.Combine(dir.Path, "none.npy")

    let args =
        [
            "attend"
            "--q"
            missing
            "--k"
            missing
            "--v"
            missing
            "--out"
            Path.Combine(dir.Path, "o.npy")
        ]
        @ List.ofArray (options.Split ' ')

    let code, _, err = longnet args
    Assert.Equal(2, code)
    Assert.Contains(named, err)
    Assert.DoesNotContain("   at ", err) // no stack trace

[<Fact>]
let ``attend reports a missing or corrupt input file and leaves no output`` () =
    use dir = new TempDir("cli")
    let path name = Path.Combine(dir.Path, name)
    File.WriteAllText(path "bad.npy", "not an npy file")

    let args q =
        [
            "attend"
            "--q"
            q
            "--k"
            q
            "--v"
            q
            "--segments"
            "8"
            "--rates"
            "1"
            "--out"
            path "o.npy"
        ]

    let code, _, err = longnet (args (path "absent.npy"))
    Assert.Equal(2, code)
    Assert.Contains("--q", err)
    let code, _, err = longnet (args (path "bad.npy"))
    Assert.Equal(2, code)
    Assert.Contains("--q", err)
    Assert.False(File.Exists(path "o.npy"))

[<Fact>]
let ``attend rejects inputs whose shapes differ`` () =
    Native.ensureLoaded () |> ignore
    use dir = new TempDir("cli")
    let path name = Path.Combine(dir.Path, $"{name}.npy")
    Npy.writeTensor (path "q") (torch.randn (1L, 10L, 2L, 4L))
    Npy.writeTensor (path "k") (torch.randn (1L, 11L, 2L, 4L))

    let code, _, err =
        longnet
            [
                "attend"
                "--q"
                path "q"
                "--k"
                path "k"
                "--v"
                path "q"
                "--segments"
                "8"
                "--rates"
                "1"
                "--out"
                path "o"
            ]

    Assert.Equal(2, code)
    Assert.Contains("--k", err)

[<Fact>]
let ``every command answers --help with exit code 0`` () =
    let code, out, _ = longnet [ "--help" ]
    Assert.Equal(0, code)

    let commands =
        out.Split('\n')
        |> Array.skipWhile (fun l -> not (l.StartsWith "commands:"))
        |> Array.skip 1
        |> Array.takeWhile (fun l -> l.StartsWith "  ")
        |> Array.map (fun l -> l.Trim().Split(' ').[0])

    Assert.Contains("attend", commands)
    Assert.Contains("plan", commands)

    Assert.Contains("context-study", commands)
    Assert.Contains("logits", commands)
    Assert.Contains("export", commands)
    Assert.Equal(14, commands.Length) // attend … attention-demo, passkey-study, context-study, logits, import, export

    for command in commands do
        let code, text, err = longnet [ command; "--help" ]
        Assert.Equal(0, code)
        Assert.Contains($"longnet {command}", text)
        Assert.Equal("", err)

[<Fact>]
let ``usage errors exit 2 and failures exit 1, with the message on stderr and nothing on stdout`` () =
    let _, usage, _ = longnet [ "--help" ]
    Assert.Contains("exit codes: 0 success, 2 bad input (message on stderr), 1 failure", usage)

    for args in
        [
            [ "plan"; "--segments"; "8"; "--rates"; "1"; "--n"; "0"; "--heads"; "1" ]
            [ "attend"; "--q" ]
            [ "train"; "--stepz"; "3" ]
            [ "bench"; "--n"; "abc" ]
            [ "attention-demo"; "--n"; "-4" ]
            [ "passkey"; "--checkpoint"; "c"; "--lengths"; "100"; "--depths"; "2" ]
        ] do
        let code, out, err = longnet args
        Assert.Equal(2, code)
        Assert.Equal("", out)
        Assert.StartsWith("error: ", err)
        Assert.Equal(1, err.Trim().Split('\n').Length)

    use dir = new TempDir("cli")

    let code, _, err =
        longnet
            [
                "generate"
                "--checkpoint"
                dir.File "none.ckpt"
                "--prompt"
                "p"
                "--max-new-tokens"
                "3"
            ]

    Assert.Equal(1, code)
    Assert.StartsWith("error: ", err)
    Assert.Contains("none.ckpt", err)

[<Fact>]
let ``an unknown command or option gives exit code 2`` () =
    let code, _, err = longnet [ "attendd" ]
    Assert.Equal(2, code)
    Assert.Contains("unknown command", err)
    let code, _, err = longnet [ "plan"; "--segmentz"; "8" ]
    Assert.Equal(2, code)
    Assert.Contains("--segmentz", err)

[<Fact>]
let ``plan prints pairs and the diameter of the attention graph`` () =
    let code, out, err =
        longnet
            [
                "plan"
                "--segments"
                "64,128,256,512,1024"
                "--rates"
                "1,2,4,8,16"
                "--n"
                "1024"
                "--heads"
                "8"
            ]

    Assert.True((code = 0), err)
    Assert.Contains("diameter", out.ToLowerInvariant())
    Assert.Contains("3", out)

[<Fact>]
let ``bench --dist uses the default geometric groups when --segments and --rates are omitted`` () =
    use dir = new TempDir("cli")
    let json = dir.File "dist.json"

    let code, out, err =
        longnet
            [
                "bench"
                "--dist"
                "--n"
                "65536"
                "--ranks"
                "1,4"
                "--heads"
                "1"
                "--head-dim"
                "1"
                "--json"
                json
            ]

    Assert.True((code = 0), $"exit {code}: {err}")
    // P = 4: slices of 16384 positions, so only the 32768-segment group crosses them
    Assert.Contains("| 4 | 1 |", out)
    Assert.True(File.Exists json)

[<Fact>]
let ``train --ranks without mpirun exits 2 and says how to launch`` () =
    let code, _, err =
        longnet
            [
                "train"
                "--corpus"
                "corpus.txt"
                "--preset"
                "tiny"
                "--out"
                "unused"
                "--ranks"
                "3"
            ]

    Assert.Equal(2, code)
    Assert.Contains("mpirun --allow-run-as-root --oversubscribe -np 3 longnet train --ranks 3", err)
    Assert.False(Directory.Exists "unused")

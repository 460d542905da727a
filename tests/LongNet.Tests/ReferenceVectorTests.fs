/// Dilated attention against independent reference vectors (tests/LongNet.Tests/vectors, written
/// from the semantics by a separate implementation): outputs and true gradients, both offset modes,
/// both kernels, float64.
module LongNet.Tests.ReferenceVectorTests

open System
open System.IO
open System.Text.Json
open Xunit
open TorchSharp
open LongNet

let private folder = Path.Combine(AppContext.BaseDirectory, "vectors", "dilated")

/// One case of cases.json.
type Case =
    {
        Id: string
        Segments: int list
        Rates: int list
        Causal: bool
        Scale: float
    }

let private cases =
    use doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "cases.json")))

    [
        for c in doc.RootElement.GetProperty("cases").EnumerateArray() ->
            {
                Id = c.GetProperty("id").GetString()
                Segments = [ for x in c.GetProperty("segment_lengths").EnumerateArray() -> x.GetInt32() ]
                Rates = [ for x in c.GetProperty("dilation_rates").EnumerateArray() -> x.GetInt32() ]
                Causal = c.GetProperty("causal").GetBoolean()
                Scale = c.GetProperty("scale").GetDouble()
            }
    ]

/// Every (case, offsets, kernel) combination, for xunit's theory data.
let combinations: obj[] seq =
    seq {
        for c in cases do
            for offsets in [ "paper"; "blocks" ] do
                for kernel in [ "fused"; "explicit" ] do
                    yield [| box c.Id; box offsets; box kernel |]
    }

let private load (id: string) (name: string) =
    Npy.readTensor (Path.Combine(folder, $"{id}.{name}.npy")) |> Inputs.bshdToBhsd

[<Theory>]
[<MemberData(nameof combinations)>]
let ``outputs and gradients match the reference vectors within 1e-12`` (id: string, offsets: string, kernel: string) =
    Native.ensureLoaded () |> ignore
    use _scope = torch.NewDisposeScope()
    let case = cases |> List.find (fun c -> c.Id = id)
    let mode = if offsets = "paper" then Paper else Blocks

    let kernel =
        if kernel = "fused" then
            DilatedAttention.Fused
        else
            DilatedAttention.Explicit
    // The vectors' scale is 1/sqrt(headDim); pass it explicitly so the config's scale path is exercised too.
    let config =
        DilatedConfig.createOrRaise case.Segments case.Rates mode case.Causal (Some case.Scale)

    let input name =
        (load id name).detach().requires_grad_ true

    let q, k, v = input "q", input "k", input "v"
    let out, _ = DilatedAttention.forwardUsing kernel false config q k v
    out.backward (ResizeArray [ load id "dout" ])

    let check (what: string) (actual: torch.Tensor) (expected: torch.Tensor) =
        let err = (actual - expected).abs().max().item<float>()
        Assert.True(err < 1e-12, $"{id} {offsets} {kernel}: max |{what} − reference| = {err:E2}")

    check "out" out (load id $"exp_{offsets}")
    check "dq" q.grad (load id $"expgrad_{offsets}_dq")
    check "dk" k.grad (load id $"expgrad_{offsets}_dk")
    check "dv" v.grad (load id $"expgrad_{offsets}_dv")

[<Fact>]
let ``the reference cases exercise padding, fewer heads than the rate, and causality`` () =
    // N = 100 with w = 8, 24 (not dividing N: a padded last segment) and r = 5 > 3 heads (two offsets
    // of that group are used by no head, so it leaves positions uncovered).
    let p01 = cases |> List.find (fun c -> c.Id = "p01_b2_n100_h3")
    Assert.Contains(p01.Segments, fun w -> 100 % w <> 0)
    Assert.Contains(p01.Rates, fun r -> r > 3)
    Assert.Contains(cases, fun c -> c.Causal)

module LongNet.Cli.Program

open TorchSharp

[<EntryPoint>]
let main _ =
    let r = LongNet.Native.ensureLoaded ()
    printfn "%A" r
    use a = torch.randn(4L, 4L)
    use b = a.matmul(a)
    printfn "%A" (b.sum().item<float32>())
    0

module LongNet.Proofs.Main
[<EntryPoint>]
let main _ = 0

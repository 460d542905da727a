/// LongNet's MPI test program. Without arguments it is the suite driver (it launches mpirun itself);
/// under mpirun each rank runs one mode: `cases`, or a fault scenario `fault`, `mismatch`, `stall`, `death`.
///   dotnet tests/LongNet.MpiTests/bin/Release/net10.0/LongNet.MpiTests.dll
///   mpirun --allow-run-as-root --oversubscribe -np 4 dotnet tests/LongNet.MpiTests/bin/Release/net10.0/LongNet.MpiTests.dll cases
module LongNet.MpiTests.Main

open LongNet.Distributed

let private underMpi (body: ICommunicator -> int) =
    Mpi.runRank (fun comm -> body (comm :> ICommunicator))

[<EntryPoint>]
let main argv =
    match argv with
    | [||]
    | [| "suite" |] -> if Driver.run () = 0 then 0 else 1
    | [| "cases" |] -> underMpi (fun comm -> if Cases.runAll comm = 0 then 0 else 1)
    | [| "fault" |] -> underMpi Cases.fault
    | [| "mismatch" |] -> underMpi Cases.mismatch
    | [| "stall" |] -> underMpi Cases.stall
    | [| "death" |] -> underMpi Cases.death
    | _ ->
        eprintfn "usage: LongNet.MpiTests [suite | cases | fault | mismatch | stall | death]"
        2

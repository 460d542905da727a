/// Gradient and parameter synchronisation of a model replicated on every rank: one flat all-reduce per
/// dtype over all parameters (in the order given, which must be the same on every rank); bfloat16 and
/// float16 values travel as float32.
/// Which reduction to use:
/// - data parallel (each rank trains on its own sequences, loss = mean over its tokens): `allReduceGradients`
///   averages, giving the gradient of the mean loss over all ranks (equal token counts per rank);
/// - sequence parallel (one sequence split over the ranks with `SequenceParallel`, each rank's loss =
///   Σ over its tokens / total tokens): `sumGradients` gives the gradient of the whole sequence's loss.
module LongNet.Distributed.DataParallel

open TorchSharp
open TorchSharp.Modules

let private describe (parameters: Parameter[]) =
    parameters
    |> Array.map (fun p -> $"{p.dtype}[{System.String.Join(',', p.shape)}]")
    |> String.concat " "

// bfloat16 and float16 cannot be summed by the transport: they travel as float32 (exact) and are
// cast back when copied into the parameters.
let private summable (t: torch.Tensor) =
    match t.dtype with
    | torch.ScalarType.Float32
    | torch.ScalarType.Float64 -> t
    | _ -> t.to_type torch.ScalarType.Float32

let private reduce (comm: ICommunicator) (factor: float) (parameters: seq<Parameter>) =
    let parameters = Seq.toArray parameters
    Collectives.verifySame comm "the list of parameters (dtype and shape, in order)" (describe parameters)
    use _ = torch.no_grad ()

    for dtype in parameters |> Array.map (fun p -> p.dtype) |> Array.distinct do
        use scope = torch.NewDisposeScope()
        let group = parameters |> Array.filter (fun p -> p.dtype = dtype)

        let grads =
            group
            |> Array.map (fun p -> (if isNull p.grad then torch.zeros_like p else p.grad).reshape -1L)

        let summed = Collectives.allReduceSum comm (summable (torch.cat (grads, 0L)))
        use factorScalar = factor.ToScalar()
        let summed = if factor = 1.0 then summed else summed.mul factorScalar
        let mutable offset = 0L

        for p in group do
            let part = summed.narrow(0L, offset, p.NumberOfElements).view_as(p).to_type p.dtype
            offset <- offset + p.NumberOfElements

            if isNull p.grad then
                p.grad <- part.clone().DetachFromDisposeScope()
            else
                p.grad.copy_ part |> ignore

/// Replaces every parameter's gradient by its mean over the ranks (a missing gradient counts as zeros
/// and is created). Collective: every rank passes the same parameters (checked: dtype and shape, in order).
let allReduceGradients (comm: ICommunicator) (parameters: seq<Parameter>) : unit =
    reduce comm (1.0 / float comm.Size) parameters

/// Replaces every parameter's gradient by its sum over the ranks (see the module doc for when to sum).
let sumGradients (comm: ICommunicator) (parameters: seq<Parameter>) : unit = reduce comm 1.0 parameters

/// Sets every parameter to rank `root`'s values (an all-reduce where the other ranks contribute zeros),
/// so that replicas start identical. Collective.
let broadcastParameters (comm: ICommunicator) (root: int) (parameters: seq<Parameter>) : unit =
    let parameters = Seq.toArray parameters
    Collectives.verifySame comm "the list of parameters (dtype and shape, in order)" (describe parameters)
    use _ = torch.no_grad ()
    use scope = torch.NewDisposeScope()

    for p in parameters do
        let contribution = if comm.Rank = root then p.detach () else torch.zeros_like p

        p.copy_ (Collectives.allReduceSum comm (summable (contribution.contiguous ())))
        |> ignore

/// AdamW (Loshchilov & Hutter 2019) written over TorchSharp parameters, so that its whole state —
/// the step count, first and second moments and (for bf16/fp16 models) fp32 master weights — is a
/// list of named tensors a checkpoint stores and restores exactly.
namespace LongNet.Training

open System
open TorchSharp
open TorchSharp.Modules

/// AdamW hyper-parameters (the learning rate comes from the schedule at every step).
type AdamWSettings =
    {
        /// β₁, the decay of the first moment.
        Beta1: float
        /// β₂, the decay of the second moment.
        Beta2: float
        /// ε added to the root of the second moment.
        Epsilon: float
        /// Decoupled weight decay λ, applied to matrices (parameters with ≥ 2 dimensions) only.
        WeightDecay: float
    }

/// The optimizer's state for one parameter.
type private Slot =
    {
        Name: string
        Parameter: Parameter
        /// fp32 copy updated by the optimizer when the parameter is bf16 or fp16.
        Master: torch.Tensor option
        First: torch.Tensor
        Second: torch.Tensor
        Decay: bool
    }

/// AdamW over named parameters. θ ← θ − lr·(m̂ / (√v̂ + ε) + λθ) with bias-corrected moments.
[<Sealed>]
type AdamW(parameters: (string * Parameter) list, settings: AdamWSettings) =
    let stateType (p: Parameter) =
        if p.dtype = torch.ScalarType.Float64 then
            torch.ScalarType.Float64
        else
            torch.ScalarType.Float32

    let slots =
        [
            for name, p in parameters do
                let dtype = stateType p

                let master =
                    if p.dtype = dtype then
                        None
                    else
                        Some(p.detach().to_type(dtype).clone().DetachFromDisposeScope())

                {
                    Name = name
                    Parameter = p
                    Master = master
                    First = torch.zeros(p.shape, dtype = dtype, device = p.device).DetachFromDisposeScope()
                    Second = torch.zeros(p.shape, dtype = dtype, device = p.device).DetachFromDisposeScope()
                    Decay = p.Dimensions >= 2L
                }
        ]

    let mutable steps = 0L

    /// The hyper-parameters.
    member _.Settings = settings

    /// The number of updates applied so far.
    member _.Steps = steps

    /// Clears every parameter's gradient.
    member _.ZeroGrad() =
        // TorchSharp's grad getter wraps a new handle on every call: the scope frees them
        use scope = torch.NewDisposeScope()

        for s in slots do
            let g = s.Parameter.grad

            if not (isNull g) then
                g.zero_ () |> ignore

    /// The global L2 norm of all gradients (computed in float64), after which the gradients are scaled
    /// by maxNorm / norm when the norm exceeds `maxNorm` (`maxNorm` ≤ 0: no clipping). Returns the norm
    /// before clipping (NaN or ∞ when a gradient is not finite).
    member _.ClipGradients(maxNorm: float) : float =
        use scope = torch.NewDisposeScope()

        let squares =
            slots
            |> List.choose (fun s ->
                let g = s.Parameter.grad

                if isNull g then
                    None
                else
                    Some(g.to_type(torch.ScalarType.Float64).square().sum()))

        if squares.IsEmpty then
            0.0
        else
            let norm = torch.stack(squares).sum().sqrt().item<float>()

            if maxNorm > 0.0 && Double.IsFinite norm && norm > maxNorm then
                let factor = maxNorm / (norm + 1e-6)

                use _ = torch.no_grad ()

                for s in slots do
                    let g = s.Parameter.grad

                    if not (isNull g) then
                        g.mul_ (factor.ToScalar()) |> ignore

            norm

    /// Applies one update with learning rate `lr` from the current gradients.
    member _.Step(lr: float) =
        steps <- steps + 1L
        let b1, b2 = settings.Beta1, settings.Beta2
        let correction1 = 1.0 - Math.Pow(b1, float steps)
        let correction2 = 1.0 - Math.Pow(b2, float steps)
        use _ = torch.no_grad ()

        for s in slots do
            use scope = torch.NewDisposeScope()
            let grad = s.Parameter.grad

            if not (isNull grad) then
                let g = grad.to_type s.First.dtype
                s.First.mul_(b1.ToScalar()).add_(g, (1.0 - b1).ToScalar()) |> ignore
                s.Second.mul_(b2.ToScalar()).addcmul_(g, g, (1.0 - b2).ToScalar()) |> ignore

                let target =
                    match s.Master with
                    | Some m -> m
                    | None -> s.Parameter :> torch.Tensor

                if s.Decay && settings.WeightDecay > 0.0 then
                    target.mul_ ((1.0 - lr * settings.WeightDecay).ToScalar()) |> ignore

                let denominator = (s.Second / correction2).sqrt_().add_(settings.Epsilon.ToScalar())
                target.addcdiv_ (s.First, denominator, (-lr / correction1).ToScalar()) |> ignore

                match s.Master with
                | Some m -> s.Parameter.copy_ m |> ignore
                | None -> ()

    /// Sets every fp32 master weight from `values` of its parameter's name, or from the parameter itself
    /// where `values` has none — after the parameters were overwritten (a checkpoint's weights copied into
    /// a bf16 model before fine-tuning), so the next step updates the new weights, not the old masters.
    member _.ResetMasters(values: string -> torch.Tensor option) =
        use _ = torch.no_grad ()

        for s in slots do
            match s.Master with
            | Some m ->
                match values s.Name with
                | Some v -> m.copy_ v |> ignore
                | None -> m.copy_ s.Parameter |> ignore
            | None -> ()

    /// The state as named tensors: "first.<name>", "second.<name>" and "master.<name>" (views of the
    /// optimizer's own tensors; copy them before changing).
    member _.State: (string * torch.Tensor) list =
        [
            for s in slots do
                $"first.{s.Name}", s.First
                $"second.{s.Name}", s.Second

                match s.Master with
                | Some m -> $"master.{s.Name}", m
                | None -> ()
        ]

    /// Restores the step count and every tensor of `State` from `tensors` (by name); fails naming the
    /// first missing or mis-shaped tensor.
    member _.Load(stepCount: int64, tensors: Map<string, torch.Tensor>) =
        use _ = torch.no_grad ()

        let copy (name: string) (target: torch.Tensor) =
            match tensors.TryFind name with
            | None -> failwith $"the optimizer state lacks '{name}'."
            | Some t when t.shape <> target.shape ->
                failwith $"the optimizer state '{name}' has shape {t.shape}; the model needs {target.shape}."
            | Some t -> target.copy_ t |> ignore

        for s in slots do
            copy $"first.{s.Name}" s.First
            copy $"second.{s.Name}" s.Second
            s.Master |> Option.iter (copy $"master.{s.Name}")

        steps <- stepCount

    interface IDisposable with
        member _.Dispose() =
            for s in slots do
                s.First.Dispose()
                s.Second.Dispose()
                s.Master |> Option.iter _.Dispose()

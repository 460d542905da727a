/// Validation of attention inputs at the public boundary: shapes, dtypes, devices and (optionally)
/// finiteness, with errors that name the parameter and the allowed values. Runs before any kernel.
module LongNet.Inputs

open System
open TorchSharp

/// The floating-point dtypes attention accepts.
let supportedDtypes =
    [
        torch.ScalarType.Float32
        torch.ScalarType.Float64
        torch.ScalarType.BFloat16
        torch.ScalarType.Float16
    ]

let private describe (t: torch.Tensor) =
    let shape = String.Join(", ", t.shape)
    $"[{shape}] {t.dtype} on {t.device}"

/// Checks that q, k, v are 4-D `[batch, heads, seq, headDim]` tensors of one shape, dtype and device
/// with every size ≥ 1, and (when `checkFinite`) that they hold no NaN or infinity.
let validateQkv (checkFinite: bool) (q: torch.Tensor) (k: torch.Tensor) (v: torch.Tensor) : unit =
    for name, t in [ "query", q; "key", k; "value", v ] do
        if isNull (box t) then
            raise (ArgumentNullException(name))

        if t.Dimensions <> 4L then
            raise (
                ArgumentException(
                    $"{name} must be 4-D [batch, heads, seq, headDim]; got {t.Dimensions}-D {describe t}.",
                    name
                )
            )

        if t.shape |> Array.exists (fun s -> s < 1L) then
            raise (ArgumentException($"{name} must have every dimension ≥ 1; got {describe t}.", name))

        if not (List.contains t.dtype supportedDtypes) then
            raise (ArgumentException($"{name} must be float32, float64, bfloat16 or float16; got {describe t}.", name))

    for name, t in [ "key", k; "value", v ] do
        if t.shape <> q.shape then
            raise (ArgumentException($"{name} must have the query's shape {describe q}; got {describe t}.", name))

        if t.dtype <> q.dtype then
            raise (ArgumentException($"{name} must have the query's dtype {q.dtype}; got {t.dtype}.", name))

        if t.device_type <> q.device_type || t.device_index <> q.device_index then
            raise (ArgumentException($"{name} must be on the query's device {q.device}; got {t.device}.", name))

    if checkFinite then
        for name, t in [ "query", q; "key", k; "value", v ] do
            use scope = torch.NewDisposeScope()

            if not (t.isfinite().all().item<bool>()) then
                raise (ArgumentException($"{name} holds NaN or infinite values (checkInputs is on).", name))

/// Converts `[batch, seq, heads, headDim]` (the file and flash-attn layout) to `[batch, heads, seq, headDim]`.
let bshdToBhsd (x: torch.Tensor) : torch.Tensor = x.permute (0L, 2L, 1L, 3L)

/// Converts `[batch, heads, seq, headDim]` back to `[batch, seq, heads, headDim]`.
let bhsdToBshd (x: torch.Tensor) : torch.Tensor = x.permute (0L, 2L, 1L, 3L)

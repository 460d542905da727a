/// libtorch's fused attention kernels that return the log-sum-exp (which TorchSharp's SDPA binding
/// drops), reached through one TorchScript compilation unit compiled once per process.
/// CPU: the flash kernel (`_scaled_dot_product_flash_attention_for_cpu` and its backward);
/// CUDA: the memory-efficient kernel (additive masks, fp32/bf16/fp16).
/// Notation: `[b, h, m, d]` — batch, heads (any flattened block dims), rows per block, head dim.
module LongNet.Kernels

open TorchSharp

// The script is a constant: a TorchScript *compile* error would abort the process (TorchSharp
// catches only run-time errors), so it is compiled once and covered by the tests.
let private source =
    """
def forward(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], causal: bool, scale: float) -> Tuple[Tensor, Tensor]:
    if q.is_cuda:
        out, lse, seed, offset = torch._scaled_dot_product_efficient_attention(q, k, v, mask, True, 0.0, causal, scale=scale)
        return out, lse[:, :, : q.size(2)]
    out, lse = torch._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, attn_mask=mask, scale=scale)
    return out, lse

def backward(g: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, mask: Optional[Tensor], causal: bool, scale: float) -> Tuple[Tensor, Tensor, Tensor]:
    if q.is_cuda and mask is not None:
        rows = q.size(2)
        padded = ((rows + 31) // 32) * 32
        lse32 = torch.constant_pad_nd(lse, [0, padded - rows], 0.0).contiguous()
        seed = lse.new_zeros([2]).long()
        offset = lse.new_zeros([2]).long()
        dq, dk, dv, db = torch._scaled_dot_product_efficient_attention_backward(g, q, k, v, mask, out, lse32, seed, offset, 0.0, [True, True, True, False], causal, scale=scale)
        return dq, dk, dv
    dq, dk, dv = torch._scaled_dot_product_flash_attention_for_cpu_backward(g, q, k, v, out, lse, 0.0, causal, attn_mask=mask, scale=scale)
    return dq, dk, dv
"""

// The CUDA backward takes a bias tensor, never None: give it a broadcast zero bias when unmasked.
let private cudaBias (q: torch.Tensor) (k: torch.Tensor) (mask: torch.Tensor option) =
    match mask with
    | Some m -> Some m
    | None when q.device_type = DeviceType.CUDA ->
        Some(
            torch
                .zeros([| 1L; 1L; 1L; 1L |], dtype = q.dtype, device = q.device)
                .expand(q.shape.[0], q.shape.[1], q.shape.[2], k.shape.[2])
        )
    | None -> None

let private unit = lazy (torch.jit.compile source)

// TorchSharp's `invoke` turns a double or bool argument into a temporary Scalar and keeps only its
// native handle, so the GC may free that Scalar before the native call reads it (seen as random
// "toLong" failures under GC pressure). Pass Scalars we own and keep them alive across the call.
let private invokeWith<'T> (name: string) (tensors: obj list) (causal: bool) (scale: float) : 'T =
    use causalScalar = causal.ToScalar()
    use scaleScalar = scale.ToScalar()

    let result =
        unit.Force().invoke<'T>(name, Array.ofList (tensors @ [ box causalScalar; box scaleScalar ]))

    System.GC.KeepAlive causalScalar
    System.GC.KeepAlive scaleScalar
    result

/// Whether the fused kernels serve tensors of this dtype on this device.
let supports (t: torch.Tensor) : bool =
    match t.device_type with
    | DeviceType.CPU ->
        List.contains
            t.dtype
            [
                torch.ScalarType.Float32
                torch.ScalarType.Float64
                torch.ScalarType.BFloat16
                torch.ScalarType.Float16
            ]
    | DeviceType.CUDA ->
        List.contains
            t.dtype
            [
                torch.ScalarType.Float32
                torch.ScalarType.BFloat16
                torch.ScalarType.Float16
            ]
    | _ -> false

/// Fused attention `[b, h, m, d]` → (out `[b, h, m, d]`, lse `[b, h, m]`); `mask` is additive and
/// broadcastable to `[b, h, m, m]`; `causal` lets row t see rows ≤ t. The lse carries no gradient.
let forward
    (scale: float)
    (causal: bool)
    (mask: torch.Tensor option)
    (q: torch.Tensor)
    (k: torch.Tensor)
    (v: torch.Tensor)
    =
    let struct (out: torch.Tensor, lse: torch.Tensor) =
        invokeWith<struct (torch.Tensor * torch.Tensor)> "forward" [ q; k; v; Option.toObj mask ] causal scale

    out, lse

/// The attention backward for upstream gradient `g`, given the output `out` and log-sum-exp `lse`
/// the softmax is normalised by (pass a mixture's global ones to get the mixture's exact gradient).
let backward
    (scale: float)
    (causal: bool)
    (mask: torch.Tensor option)
    (g: torch.Tensor)
    (q: torch.Tensor)
    (k: torch.Tensor)
    (v: torch.Tensor)
    (out: torch.Tensor)
    (lse: torch.Tensor)
    =
    let struct (dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor) =
        invokeWith<struct (torch.Tensor * torch.Tensor * torch.Tensor)>
            "backward"
            [ g; q; k; v; out; lse; Option.toObj (cudaBias q k mask) ]
            causal
            scale

    dq, dk, dv

/// Collectives over tensors and arrays on top of `ICommunicator`, and the start-up check that every
/// rank runs the same configuration. Tensors travel as contiguous CPU memory (others are copied there
/// and back); rows are along dim 0.
module LongNet.Distributed.Collectives

open System
open System.Runtime.CompilerServices
open System.Runtime.InteropServices
open System.Security.Cryptography
open System.Text
open TorchSharp

/// The element type and elements-per-scalar a dtype travels as: float32, float64 and int64 natively,
/// anything else as raw bytes (which moves but cannot be summed).
let elementOf (dtype: torch.ScalarType) : ElementType * int =
    match dtype with
    | torch.ScalarType.Float32 -> ElementType.Float32, 1
    | torch.ScalarType.Float64 -> ElementType.Float64, 1
    | torch.ScalarType.Int64 -> ElementType.Int64, 1
    | torch.ScalarType.Float16
    | torch.ScalarType.BFloat16
    | torch.ScalarType.Int16 -> ElementType.Byte, 2
    | torch.ScalarType.Int32 -> ElementType.Byte, 4
    | torch.ScalarType.Byte
    | torch.ScalarType.Int8
    | torch.ScalarType.Bool -> ElementType.Byte, 1
    | other -> invalidArg "dtype" $"cannot communicate tensors of dtype {other}."

/// The address of the first element of a contiguous CPU tensor (0 for an empty one).
let pointer (t: torch.Tensor) : nativeint =
    if t.device_type <> DeviceType.CPU || not (t.is_contiguous ()) then
        invalidArg "t" "communication buffers must be contiguous CPU tensors."

    let span = t.bytes

    if span.IsEmpty then
        0n
    else
        IntPtr(Unsafe.AsPointer(&MemoryMarshal.GetReference(span)))

let private withPinned (arrays: Array list) (body: nativeint list -> 'T) : 'T =
    let handles = arrays |> List.map (fun a -> GCHandle.Alloc(a, GCHandleType.Pinned))

    try
        body (handles |> List.map (fun h -> h.AddrOfPinnedObject()))
    finally
        for h in handles do
            h.Free()

let private rowsOf (t: torch.Tensor) =
    if t.Dimensions = 0L then
        invalidArg "t" "row collectives need at least one dimension (rows along dim 0)."

    t.shape.[0]

let private toCpu (t: torch.Tensor) =
    if t.device_type = DeviceType.CPU then
        t.contiguous ()
    else
        t.cpu().contiguous()

let private checkedInt (operation: string) (value: int64) =
    if value > int64 Int32.MaxValue then
        invalidArg "t" $"{operation}: more than {Int32.MaxValue} elements to one rank in one call; split the buffer."

    int value

/// All-gathers int64 values: every rank contributes `values` (the same length on every rank); the
/// result holds each rank's values in rank order.
let allGatherInt64 (comm: ICommunicator) (values: int64[]) : int64[][] =
    let result = Array.zeroCreate<int64>(values.Length * comm.Size)

    withPinned [ values; result ] (fun ptrs -> comm.AllGather(ptrs.[0], values.Length, ptrs.[1], ElementType.Int64))

    if values.Length = 0 then
        Array.create comm.Size [||]
    else
        Array.chunkBySize values.Length result

/// All-gathers byte strings of any length: the result holds each rank's bytes in rank order.
let allGatherBytes (comm: ICommunicator) (bytes: byte[]) : byte[][] =
    let counts =
        allGatherInt64 comm [| int64 bytes.Length |] |> Array.map (fun c -> int c.[0])

    let result = Array.zeroCreate<byte>(Array.sum counts)

    withPinned [ bytes; result ] (fun ptrs ->
        comm.AllGatherV(ptrs.[0], bytes.Length, ptrs.[1], counts, ElementType.Byte))

    let displs = Communicator.displacements "allGatherBytes" counts
    Array.init comm.Size (fun q -> Array.sub result displs.[q] counts.[q])

/// All-gathers tensors along dim 0: every rank contributes `[rows_p, …]` (trailing sizes and dtype equal
/// on every rank); the result `[Σ rows_p, …]` holds the ranks' rows in rank order, on `t`'s device.
let allGatherRows (comm: ICommunicator) (t: torch.Tensor) : torch.Tensor =
    let rows = rowsOf t
    let source = toCpu t
    let element, scalars = elementOf t.dtype

    let rowElements =
        (if rows = 0L then 0L else source.NumberOfElements / rows) * int64 scalars

    let trailing = t.shape.[1..]
    let counts = allGatherInt64 comm [| rows |] |> Array.map (fun c -> c.[0])

    let result =
        torch.empty (Array.append [| Array.sum counts |] trailing, dtype = t.dtype)

    comm.AllGatherV(
        pointer source,
        checkedInt "allGatherRows" (rows * rowElements),
        pointer result,
        counts |> Array.map (fun c -> checkedInt "allGatherRows" (c * rowElements)),
        element
    )

    result.``to`` t.device

/// Exchanges rows: `send` `[Σ sendRows, …]` holds the rows for rank 0, then rank 1, …; the result
/// `[Σ recvRows, …]` holds the rows from rank 0, then rank 1, … (counts must match pairwise across ranks).
let allToAllRows (comm: ICommunicator) (send: torch.Tensor) (sendRows: int[]) (recvRows: int[]) : torch.Tensor =
    let rows = rowsOf send

    if Array.sumBy int64 sendRows <> rows then
        invalidArg "sendRows" $"sendRows sum to {Array.sumBy int64 sendRows}, but send has {rows} rows."

    let source = toCpu send
    let element, scalars = elementOf send.dtype
    let trailing = send.shape.[1..]
    let rowElements = (Array.fold (*) 1L trailing) * int64 scalars
    let total = Array.sumBy int64 recvRows

    let result = torch.empty (Array.append [| total |] trailing, dtype = send.dtype)

    let elements (counts: int[]) =
        counts |> Array.map (fun c -> checkedInt "allToAllRows" (int64 c * rowElements))

    comm.AllToAllV(pointer source, elements sendRows, pointer result, elements recvRows, element)
    result.``to`` send.device

/// The element-wise sum of `t` over all ranks (float32, float64 or int64), as a new tensor on `t`'s device.
let allReduceSum (comm: ICommunicator) (t: torch.Tensor) : torch.Tensor =
    let element, _ = elementOf t.dtype

    if element = ElementType.Byte then
        invalidArg "t" $"all-reduce sums float32, float64 or int64 tensors, not {t.dtype}."

    let source = toCpu t
    let result = torch.empty_like source

    comm.AllReduceSum(pointer source, pointer result, checkedInt "allReduceSum" source.NumberOfElements, element)

    result.``to`` t.device

/// Checks that every rank passes the same `description` (compared by SHA-256, all-gathered); when they
/// differ, raises a `CollectiveException` (on every rank) that lists each rank's description.
/// `what` names the thing compared, e.g. "sequence-parallel attention configuration".
let verifySame (comm: ICommunicator) (what: string) (description: string) : unit =
    let text = Encoding.UTF8.GetBytes description
    let hash = SHA256.HashData text
    let hashes = allGatherBytes comm hash

    if hashes |> Array.exists (fun h -> h <> hashes.[0]) then
        let texts = allGatherBytes comm text |> Array.map Encoding.UTF8.GetString

        let lines =
            texts
            |> Array.mapi (fun q t -> $"  rank {q}: {t}")
            |> String.concat Environment.NewLine

        raise (
            CollectiveException(
                $"{what} differs across ranks; every rank must run with the same one:{Environment.NewLine}{lines}"
            )
        )

/// Distance-bias tensors for the attention kernels: the additive −slopeₕ · f(δ) of a `DistanceBias`
/// laid out for a block family of dilated attention, for explicit blocks, and for one decoding step.
/// Notation: h heads, m rows per block, r dilation rate, δ distance in original positions.
module LongNet.BiasTables

open TorchSharp

/// The dtype an additive mask takes for inputs of `dtype`: the inputs' own for float32 and float64,
/// else float32 (the CPU fused kernels accept both).
let maskDtype (dtype: torch.ScalarType) : torch.ScalarType =
    if dtype = torch.ScalarType.Float64 then
        torch.ScalarType.Float64
    else
        torch.ScalarType.Float32

/// −slope · f(δ) for distances `distance` (float64) and per-head slopes broadcast against them.
let private apply (form: BiasForm) (slopes: torch.Tensor) (distance: torch.Tensor) : torch.Tensor =
    match form with
    | LinearBias -> -(slopes * distance)
    | LogarithmicBias -> -(slopes * distance.log1p ())

/// The slopes of the given heads as a float64 tensor `[heads.Length]`.
let private slopesOf (bias: DistanceBias) (heads: int64[]) : torch.Tensor =
    let all = List.toArray bias.Slopes

    heads
    |> Array.map (fun h ->
        if h < 0L || h >= int64 all.Length then
            invalidArg
                "config"
                $"the distance bias has {all.Length} slopes, but head {h} attends; give one slope per head."
        else
            all.[int h])
    |> fun s -> torch.tensor (s, dtype = torch.ScalarType.Float64)

let private build
    (bias: DistanceBias)
    (heads: int64[])
    (rows: int64)
    (rate: int64)
    (dtype: torch.ScalarType)
    (device: torch.Device)
    : torch.Tensor =
    use scope = torch.NewDisposeScope()
    let index = torch.arange (rows, dtype = torch.ScalarType.Float64)
    use rateScalar = (float rate).ToScalar()
    let distance = (index.unsqueeze 1L - index.unsqueeze 0L).abs_().mul_ rateScalar
    // f(δ) once in float64, then one multiply per head in the mask's dtype (no per-head float64 copy)
    let profile =
        (apply bias.Form (torch.ones (1, dtype = torch.ScalarType.Float64)) distance)
            .to_type(maskDtype dtype)
            .``to``(device)
            .view(1L, 1L, rows, rows)

    let slopes =
        (slopesOf bias heads).to_type(maskDtype dtype).``to``(device).view(-1L, 1L, 1L, 1L)

    (profile * slopes).contiguous().MoveToOuterDisposeScope()

// Tables are reused across layers, steps and calls (one per block family): building one costs
// several passes over rows² entries per head, as much as a small attention call. Callers get an
// alias (their own handle on the shared storage), so evicting a table never frees one in use.
let private cache = System.Collections.Generic.Dictionary<string, torch.Tensor>()
// 3 GiB: a dense model's table at 8,192 positions and 8 heads (2 GiB in float32) must stay cached,
// or every layer of every step would rebuild it
let private cacheLimitBytes = 3L <<< 30
let mutable private cachedBytes = 0L

/// Frees every cached table (tables handed out stay valid until their holders dispose them).
let clear () =
    lock cache (fun () ->
        for KeyValue(_, t) in cache do
            t.Dispose()

        cache.Clear()
        cachedBytes <- 0L)

/// The bias of blocks whose rows lie `rate` positions apart, for `heads` (their indices):
/// `[heads, 1, rows, rows]`, entry (a, b) = −slope · f(rate·|a − b|), in `maskDtype dtype` on `device`.
/// Tables are cached up to 3 GiB in all (the cache is emptied when a new one would pass that); the
/// caller owns (disposes) the handle it gets.
let blocks
    (bias: DistanceBias)
    (heads: int64[])
    (rows: int64)
    (rate: int64)
    (dtype: torch.ScalarType)
    (device: torch.Device)
    : torch.Tensor =
    let slopeText =
        heads
        |> Array.map (fun h ->
            if h >= 0L && h < int64 bias.Slopes.Length then
                bias.Slopes.[int h].ToString "R"
            else
                "?")
        |> String.concat ","

    let key =
        $"{DistanceBias.formName bias.Form}|{slopeText}|{rows}|{rate}|{maskDtype dtype}|{device}"

    lock cache (fun () ->
        match cache.TryGetValue key with
        | true, table -> table.alias ()
        | _ ->
            let table = build bias heads rows rate dtype device
            let bytes = table.NumberOfElements * table.ElementSize

            if bytes > cacheLimitBytes then
                table
            else
                if cachedBytes + bytes > cacheLimitBytes then
                    for KeyValue(_, t) in cache do
                        t.Dispose()

                    cache.Clear()
                    cachedBytes <- 0L

                let kept = table.alias().DetachFromDisposeScope()
                cache.[key] <- kept
                cachedBytes <- cachedBytes + bytes
                table)

/// The bias of one decoding step: `distances` `[h, slots]` (int64, query position − key position)
/// → `[1, h, 1, slots]` in `maskDtype dtype` on the distances' device.
let step (bias: DistanceBias) (distances: torch.Tensor) (dtype: torch.ScalarType) : torch.Tensor =
    use scope = torch.NewDisposeScope()
    let heads = distances.shape.[0]

    let slopes =
        (slopesOf bias (Array.init (int heads) int64)).``to``(distances.device).view(-1L, 1L)

    let table = apply bias.Form slopes (distances.to_type torch.ScalarType.Float64)
    table.view(1L, heads, 1L, distances.shape.[1]).to_type(maskDtype dtype).MoveToOuterDisposeScope()

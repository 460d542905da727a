/// Safetensors files (the Hugging Face tensor format) and Hugging Face checkpoint folders, without
/// Python. A file is an unsigned 64-bit little-endian header length N, N bytes of UTF-8 JSON (`name →
/// {dtype, shape, data_offsets [begin, end)}` with offsets relative to the data start, plus an optional
/// `__metadata__` object of strings; trailing spaces allowed), then the raw little-endian data, which
/// the tensors must cover exactly (no gaps, no overlaps, nothing after the last tensor). Element types:
/// F64, F32, F16, BF16, I64, I32, I16, I8, U8 and BOOL. Every malformed or truncated input is reported,
/// before any native call, as an error naming the file and, where one is involved, the tensor. Writes
/// are atomic (a temporary file in the target's folder, then a rename). Little-endian hosts only.
module LongNet.Interop.SafeTensors

open System
open System.Buffers.Binary
open System.Collections.Generic
open System.IO
open System.Text
open System.Text.Encodings.Web
open System.Text.Json
open TorchSharp
open LongNet

/// An element type of a safetensors file, named as in the header's `dtype` field.
type Dtype =
    /// 64-bit IEEE float (torch.float64).
    | F64
    /// 32-bit IEEE float (torch.float32).
    | F32
    /// 16-bit IEEE half float (torch.float16).
    | F16
    /// bfloat16 (torch.bfloat16).
    | BF16
    /// 64-bit signed integer (torch.int64).
    | I64
    /// 32-bit signed integer (torch.int32).
    | I32
    /// 16-bit signed integer (torch.int16).
    | I16
    /// 8-bit signed integer (torch.int8).
    | I8
    /// 8-bit unsigned integer (torch.uint8).
    | U8
    /// Boolean stored as one byte, 0 or 1 (torch.bool).
    | BOOL

/// Every supported element type, widest first.
let allDtypes: Dtype list = [ F64; I64; F32; I32; F16; BF16; I16; I8; U8; BOOL ]

/// The name of `dtype` in a header's `dtype` field (e.g. "BF16").
let dtypeName (dtype: Dtype) : string =
    match dtype with
    | F64 -> "F64"
    | F32 -> "F32"
    | F16 -> "F16"
    | BF16 -> "BF16"
    | I64 -> "I64"
    | I32 -> "I32"
    | I16 -> "I16"
    | I8 -> "I8"
    | U8 -> "U8"
    | BOOL -> "BOOL"

/// The bytes one element of `dtype` occupies in the file (1, 2, 4 or 8).
let elementSize (dtype: Dtype) : int =
    match dtype with
    | F64
    | I64 -> 8
    | F32
    | I32 -> 4
    | F16
    | BF16
    | I16 -> 2
    | I8
    | U8
    | BOOL -> 1

/// The TorchSharp element type that holds `dtype`.
let scalarType (dtype: Dtype) : torch.ScalarType =
    match dtype with
    | F64 -> torch.ScalarType.Float64
    | F32 -> torch.ScalarType.Float32
    | F16 -> torch.ScalarType.Float16
    | BF16 -> torch.ScalarType.BFloat16
    | I64 -> torch.ScalarType.Int64
    | I32 -> torch.ScalarType.Int32
    | I16 -> torch.ScalarType.Int16
    | I8 -> torch.ScalarType.Int8
    | U8 -> torch.ScalarType.Byte
    | BOOL -> torch.ScalarType.Bool

/// The file element type of a TorchSharp element type, or None if safetensors files here cannot hold it.
let dtypeOf (scalar: torch.ScalarType) : Dtype option =
    allDtypes |> List.tryFind (fun d -> scalarType d = scalar)

let private supportedText = String.Join(", ", allDtypes |> List.map dtypeName)

/// Element types the safetensors format defines but this module does not read.
let private knownUnsupported =
    set
        [
            "U16"
            "U32"
            "U64"
            "C64"
            "F8_E4M3"
            "F8_E5M2"
            "F8_E8M0"
            "F4"
            "F6_E2M3"
            "F6_E3M2"
        ]

/// One tensor as its header entry describes it.
type TensorEntry =
    {
        /// The tensor's name (the header key).
        Name: string
        /// Its element type.
        Dtype: Dtype
        /// The length of each axis, outermost first; empty for a scalar.
        Shape: int64[]
        /// The first byte of its data, relative to the data start.
        Begin: int64
        /// One past the last byte of its data, relative to the data start.
        End: int64
    }

/// A validated safetensors header.
type Header =
    {
        /// The file the header was read from.
        Path: string
        /// The file's length in bytes.
        FileLength: int64
        /// The absolute position of the data start (8 + the header length).
        DataStart: int64
        /// The tensors, in the order of their data in the file.
        Entries: TensorEntry list
        /// The `__metadata__` strings (empty if the header has none).
        Metadata: Map<string, string>
    }

/// Headers longer than this many bytes are refused (the limit of the reference Rust implementation).
[<Literal>]
let MaxHeaderBytes = 100_000_000L

let private fail (path: string) (problem: string) : 'T =
    raise (InvalidDataException $"Cannot read safetensors file '{path}': {problem}.")

let private failTensor (path: string) (name: string) (problem: string) : 'T = fail path $"tensor '{name}' {problem}"

let private shapeText (shape: int64[]) = "[" + String.Join(", ", shape) + "]"

let private parseDtype (path: string) (name: string) (text: string) : Dtype =
    match allDtypes |> List.tryFind (fun d -> dtypeName d = text) with
    | Some d -> d
    | None when knownUnsupported.Contains text ->
        failTensor path name $"has dtype '{text}', which this reader does not support (supported: {supportedText})"
    | None -> failTensor path name $"has an unknown dtype '{text}' (supported: {supportedText})"

let private nonNegative (path: string) (name: string) (field: string) (e: JsonElement) : int64 =
    let mutable v = 0L

    if e.ValueKind = JsonValueKind.Number && e.TryGetInt64(&v) && v >= 0L then
        v
    else
        failTensor path name $"has a '{field}' entry {e.GetRawText()} that is not an integer in [0, {Int64.MaxValue}]"

let private parseEntry (path: string) (dataLength: int64) (name: string) (e: JsonElement) : TensorEntry =
    if e.ValueKind <> JsonValueKind.Object then
        failTensor path name $"is described by {e.ValueKind}, not by an object"

    let field (key: string) =
        let mutable v = Unchecked.defaultof<JsonElement>

        if e.TryGetProperty(key, &v) then
            v
        else
            failTensor path name $"lacks the '{key}' field"

    let dtypeElement = field "dtype"

    if dtypeElement.ValueKind <> JsonValueKind.String then
        failTensor path name $"has a 'dtype' that is not a string: {dtypeElement.GetRawText()}"

    let dtype = parseDtype path name (dtypeElement.GetString())
    let shapeElement = field "shape"

    if shapeElement.ValueKind <> JsonValueKind.Array then
        failTensor path name $"has a 'shape' that is not an array: {shapeElement.GetRawText()}"

    let shape =
        [| for d in shapeElement.EnumerateArray() -> nonNegative path name "shape" d |]

    let offsets = field "data_offsets"

    if offsets.ValueKind <> JsonValueKind.Array || offsets.GetArrayLength() <> 2 then
        failTensor path name $"has 'data_offsets' {offsets.GetRawText()}, not an array [begin, end]"

    let first = nonNegative path name "data_offsets" offsets.[0]
    let last = nonNegative path name "data_offsets" offsets.[1]
    let size = int64 (elementSize dtype)

    let bytes =
        match Npy.elementCount shape with
        | Some n when n <= Int64.MaxValue / size -> n * size
        | _ -> failTensor path name $"has shape {shapeText shape}, which has too many elements"

    if last < first then
        failTensor path name $"has data_offsets [{first}, {last}) that end before they begin"

    if last - first <> bytes then
        failTensor
            path
            name
            $"has data_offsets [{first}, {last}) holding {last - first} bytes, but shape {shapeText shape} of {dtypeName dtype} needs {bytes}"

    if last > dataLength then
        failTensor
            path
            name
            $"has data_offsets [{first}, {last}) reaching past the end of the data ({dataLength} bytes): the file is truncated"

    {
        Name = name
        Dtype = dtype
        Shape = shape
        Begin = first
        End = last
    }

let private parseMetadata (path: string) (e: JsonElement) : Map<string, string> =
    if e.ValueKind <> JsonValueKind.Object then
        fail path $"'__metadata__' is {e.ValueKind}, not an object of strings"

    e.EnumerateObject()
    |> Seq.fold
        (fun (acc: Map<string, string>) p ->
            if p.Value.ValueKind <> JsonValueKind.String then
                fail path $"'__metadata__' entry '{p.Name}' is {p.Value.GetRawText()}, not a string"
            elif acc.ContainsKey p.Name then
                fail path $"'__metadata__' has the key '{p.Name}' twice"
            else
                acc.Add(p.Name, p.Value.GetString()))
        Map.empty

/// Checks that the entries, sorted by offset, tile [0, dataLength) exactly; returns them in that order.
let private checkCoverage (path: string) (dataLength: int64) (entries: TensorEntry list) : TensorEntry list =
    let sorted = entries |> List.sortBy (fun t -> t.Begin, t.End, t.Name)

    let mutable cursor = 0L
    let mutable previous: TensorEntry option = None

    for t in sorted do
        if t.Begin < cursor then
            let other =
                match previous with
                | Some p -> $"tensor '{p.Name}' [{p.Begin}, {p.End})"
                | None -> "another tensor"

            failTensor path t.Name $"has data_offsets [{t.Begin}, {t.End}) overlapping {other}"
        elif t.Begin > cursor then
            fail
                path
                $"data bytes [{cursor}, {t.Begin}) before tensor '{t.Name}' belong to no tensor (the data must be fully covered)"

        cursor <- t.End
        previous <- Some t

    if cursor <> dataLength then
        fail
            path
            $"data bytes [{cursor}, {dataLength}) after the last tensor belong to no tensor (the data must be fully covered)"

    sorted

/// Validates the header bytes of a file of `fileLength` bytes read from `path` (used in messages).
let private parseHeader (path: string) (fileLength: int64) (header: byte[]) : Header =
    if header.Length = 0 || header.[0] <> byte '{' then
        fail path "the header does not start with '{' (not a safetensors file?)"

    let dataStart = 8L + int64 header.Length
    let dataLength = fileLength - dataStart

    let doc =
        try
            JsonDocument.Parse(ReadOnlyMemory header, JsonDocumentOptions(MaxDepth = 16))
        with :? JsonException as e ->
            fail path $"the header is not valid JSON ({e.Message})"

    use _doc = doc

    if doc.RootElement.ValueKind <> JsonValueKind.Object then
        fail path "the header is not a JSON object"

    let seen = HashSet<string>()
    let mutable metadata = Map.empty
    let entries = ResizeArray<TensorEntry>()

    for p in doc.RootElement.EnumerateObject() do
        if not (seen.Add p.Name) then
            fail path $"the header names '{p.Name}' twice"

        if p.Name = "__metadata__" then
            metadata <- parseMetadata path p.Value
        else
            entries.Add(parseEntry path dataLength p.Name p.Value)

    {
        Path = path
        FileLength = fileLength
        DataStart = dataStart
        Entries = checkCoverage path dataLength (List.ofSeq entries)
        Metadata = metadata
    }

let private checkPath (path: string) =
    if String.IsNullOrWhiteSpace path then
        invalidArg "path" "path must name a safetensors file, got an empty string."

    if not BitConverter.IsLittleEndian then
        raise (PlatformNotSupportedException "safetensors files are little-endian; this host is big-endian.")

let private openFile (path: string) : FileStream =
    checkPath path

    if Directory.Exists path then
        raise (
            ArgumentException(
                $"Cannot read safetensors file '{path}': it is a folder; use SafeTensorsFolder.load for a Hugging Face model folder.",
                "path"
            )
        )

    if not (File.Exists path) then
        raise (FileNotFoundException($"Cannot read safetensors file '{path}': it does not exist.", path))

    new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 <<< 16)

let private readHeaderFrom (path: string) (stream: FileStream) : Header =
    let fileLength = stream.Length

    if fileLength < 8L then
        fail path $"the file has {fileLength} bytes, fewer than the 8 of the header length (truncated?)"

    let prefix = Array.zeroCreate<byte> 8
    stream.ReadExactly(prefix, 0, 8)
    let n = BinaryPrimitives.ReadUInt64LittleEndian(ReadOnlySpan prefix)

    if n > uint64 (fileLength - 8L) then
        fail
            path
            $"the header length {n} reaches past the end of the file ({fileLength} bytes): the file is truncated or not a safetensors file"

    if n > uint64 MaxHeaderBytes then
        fail path $"the header length {n} exceeds the limit of {MaxHeaderBytes} bytes"

    let header = Array.zeroCreate<byte>(int n)
    stream.ReadExactly(header, 0, header.Length)
    parseHeader path fileLength header

/// The validated header of the safetensors file at `path`: its tensors (name, dtype, shape, data
/// offsets) in data order and its metadata. Reads only the header. Raises FileNotFoundException if the
/// file is missing and InvalidDataException naming the file (and tensor) if the header is malformed,
/// names an unknown dtype, has offsets that disagree with a shape, overlap, leave data uncovered or
/// reach past the end of the file.
let readHeader (path: string) : Header =
    use stream = openFile path
    readHeaderFrom path stream

/// How `loadWith` obtains tensor data.
type LoadMode =
    /// Map the file into memory where a tensor's position allows it; copy the rest (see `loadPath`).
    | MapWherePossible
    /// Copy every tensor into memory of its own.
    | CopyAlways

/// How one tensor's data is obtained.
type LoadPath =
    /// A view of a copy-on-write memory map of the file: pages are read from disk when first touched.
    | Mapped
    /// A fresh tensor filled by reading the tensor's bytes from the file.
    | Copied

/// The path `loadWith mode` takes for `entry` of `header`: Mapped under MapWherePossible when the
/// tensor has at least one element, is not BOOL (each bool byte is checked to be 0 or 1 while copying)
/// and its absolute byte position is a multiple of its element size (files written by this module and
/// by the Hugging Face writers always are); Copied otherwise.
let loadPath (mode: LoadMode) (header: Header) (entry: TensorEntry) : LoadPath =
    match mode with
    | CopyAlways -> Copied
    | MapWherePossible ->
        let size = int64 (elementSize entry.Dtype)

        if
            entry.End = entry.Begin
            || entry.Dtype = BOOL
            || (header.DataStart + entry.Begin) % size <> 0L
        then
            Copied
        else
            Mapped

/// Copy chunks are at most this many bytes (a Span reaches only 2 GiB).
let private chunkBytes = 1L <<< 24

let private copyEntry (header: Header) (stream: FileStream) (entry: TensorEntry) : torch.Tensor =
    let t = torch.empty (entry.Shape, dtype = scalarType entry.Dtype)

    let count = (entry.End - entry.Begin) / int64 (elementSize entry.Dtype)

    if count > 0L then
        use flat = t.view -1L
        let perChunk = max 1L (chunkBytes / int64 (elementSize entry.Dtype))
        stream.Seek(header.DataStart + entry.Begin, SeekOrigin.Begin) |> ignore
        let mutable first = 0L

        while first < count do
            let n = min perChunk (count - first)
            use chunk = flat.narrow (0L, first, n)

            try
                stream.ReadExactly(chunk.bytes)
            with :? EndOfStreamException ->
                failTensor
                    header.Path
                    entry.Name
                    "ends past the end of the file (was the file changed while being read?)"

            if entry.Dtype = BOOL then
                let bad = MemoryExtensions.IndexOfAnyExcept(chunk.bytes, 0uy, 1uy)

                if bad >= 0 then
                    let value = chunk.bytes.[bad]

                    failTensor
                        header.Path
                        entry.Name
                        $"holds the byte {value} at element {first + int64 bad}, which is not a bool (0 or 1)"

            first <- first + n

    t

/// The tensors named by `entries` of `header`, read through `stream`, mapped or copied per `mode`.
/// Must run inside a dispose scope, which frees the whole-file maps (the returned views keep theirs).
let private loadEntries
    (mode: LoadMode)
    (header: Header)
    (stream: FileStream)
    (entries: TensorEntry list)
    : (string * torch.Tensor) list =
    let maps = Dictionary<Dtype, torch.Tensor>()

    let mapOf (dtype: Dtype) =
        match maps.TryGetValue dtype with
        | true, m -> m
        | _ ->
            let size = int64 (elementSize dtype)

            let m =
                torch.from_file (
                    Path.GetFullPath header.Path,
                    shared = false,
                    size = header.FileLength / size,
                    dtype = scalarType dtype
                )

            maps.[dtype] <- m
            m

    [
        for e in entries ->
            match loadPath mode header e with
            | Copied -> e.Name, copyEntry header stream e
            | Mapped ->
                let size = int64 (elementSize e.Dtype)
                let count = (e.End - e.Begin) / size
                use slice = (mapOf e.Dtype).narrow(0L, (header.DataStart + e.Begin) / size, count)
                e.Name, slice.view e.Shape
    ]

/// Runs `body` in a dispose scope and moves the tensors it returns out of it: on an exception every
/// tensor made so far is freed.
let private scoped (body: unit -> (string * torch.Tensor) list) : (string * torch.Tensor) list =
    Native.ensureLoaded () |> ignore
    use _scope = torch.NewDisposeScope()
    let results = body ()
    results |> List.map (fun (n, t) -> n, t.MoveToOuterDisposeScope())

/// The entries of `header` named by `names` (in that order, repeats dropped), or all in data order.
let private select (header: Header) (names: string list option) : TensorEntry list =
    match names with
    | None -> header.Entries
    | Some names ->
        let byName = header.Entries |> List.map (fun e -> e.Name, e) |> Map.ofList

        names
        |> List.distinct
        |> List.map (fun n ->
            if isNull n then
                invalidArg "names" $"Cannot read safetensors file '{header.Path}': a requested tensor name is null."

            match byName.TryFind n with
            | Some e -> e
            | None ->
                raise (
                    KeyNotFoundException
                        $"Cannot read safetensors file '{header.Path}': it has no tensor '{n}' (it holds {header.Entries.Length} tensors)."
                ))

/// Loads tensors of the safetensors file at `path` as CPU tensors of the file's dtypes and shapes:
/// those named by `names` (in that order; repeats loaded once), or all of them in data order for None.
/// Under MapWherePossible a tensor is, where `loadPath` says Mapped, a view of a private (copy-on-write)
/// memory map of the whole file (`torch.from_file`, shared = false), so loading costs no memory until
/// pages are touched and writing to the tensor never changes the file; the map lives until the last
/// tensor viewing it is disposed. Other tensors, and every tensor under CopyAlways, are fresh memory
/// filled by reading their bytes. Each returned tensor owns its storage and is the caller's to dispose
/// (it joins the caller's dispose scope, if any). A file must not be truncated or rewritten in place
/// while mapped tensors of it live (replacing it by rename, as every write here does, is safe). Raises
/// KeyNotFoundException naming the file and tensor for a name it lacks, and the errors of `readHeader`.
let loadWith (mode: LoadMode) (path: string) (names: string list option) : (string * torch.Tensor) list =
    use stream = openFile path
    let header = readHeaderFrom path stream
    let entries = select header names
    scoped (fun () -> loadEntries mode header stream entries)

/// The tensors of `path` named by `names`, in that order, mapped where possible (see `loadWith`).
let load (path: string) (names: string list) : (string * torch.Tensor) list =
    if isNull (box names) then
        nullArg "names"

    loadWith MapWherePossible path (Some names)

/// Every tensor of `path`, in data order, mapped where possible (see `loadWith`).
let read (path: string) : (string * torch.Tensor) list = loadWith MapWherePossible path None

// ---------------------------------------------------------------------------------------------
// Writing.

/// The start of a file: the header length (u64 little-endian) and the JSON header of `entries` (name,
/// dtype, shape, begin, end) after `__metadata__`, padded with spaces to a multiple of 8 bytes.
let private headerBytes (entries: (string * Dtype * int64[] * int64 * int64) list) (metadata: Map<string, string>) =
    use buffer = new MemoryStream()

    do
        use w =
            new Utf8JsonWriter(buffer, JsonWriterOptions(Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping))

        w.WriteStartObject()
        w.WriteStartObject "__metadata__"

        for KeyValue(k, v) in metadata do
            w.WriteString(k, v)

        w.WriteEndObject()

        for name, dtype, shape, first, last in entries do
            w.WriteStartObject name
            w.WriteString("dtype", dtypeName dtype)
            w.WriteStartArray "shape"

            for d in shape do
                w.WriteNumberValue d

            w.WriteEndArray()
            w.WriteStartArray "data_offsets"
            w.WriteNumberValue first
            w.WriteNumberValue last
            w.WriteEndArray()
            w.WriteEndObject()

        w.WriteEndObject()

    let json = buffer.ToArray()
    let padded = (json.Length + 7) / 8 * 8
    let out = Array.create (8 + padded) (byte ' ')
    BinaryPrimitives.WriteUInt64LittleEndian(Span(out, 0, 8), uint64 padded)
    json.CopyTo(out, 8)
    out

/// Writes the bytes of `tensor` (C order) to `stream` in chunks, from a contiguous CPU copy.
let private writeData (stream: Stream) (tensor: torch.Tensor) =
    use _scope = torch.NewDisposeScope()
    let c = tensor.detach().cpu().contiguous()
    let count = c.NumberOfElements

    if count > 0L then
        let flat = c.view -1L
        let perChunk = max 1L (chunkBytes / c.ElementSize)
        let mutable first = 0L

        while first < count do
            let n = min perChunk (count - first)
            use chunk = flat.narrow (0L, first, n)
            stream.Write(chunk.bytes)
            first <- first + n

let private strictUtf8 = UTF8Encoding(false, true)

/// Writes `tensors` (name, tensor) to a safetensors file at `path`, atomically: the folder must exist;
/// on any failure nothing new is left at `path` (an existing file stays as it was). Each tensor is
/// stored from a contiguous CPU copy of itself, in its own dtype (one of F64, F32, F16, BF16, I64, I32,
/// I16, I8, U8, BOOL) and shape (scalars and empty tensors included). The data is laid out in the given
/// order, stably sorted by element size, widest first, so that with the header padded with spaces to a
/// multiple of 8 bytes every tensor starts at a multiple of its element size (and so maps without a
/// copy). The header lists the tensors in that same order after `__metadata__`, which holds `metadata`
/// plus `"format": "pt"` unless `metadata` sets "format" itself (Hugging Face transformers requires the
/// key). Raises ArgumentException naming the file, the parameter and the tensor (before writing
/// anything) for a null, repeated or reserved (`__metadata__`) name, a null or disposed tensor or an
/// unsupported dtype, and IOException naming the file for I/O failures.
let write (path: string) (tensors: (string * torch.Tensor) list) (metadata: Map<string, string>) : unit =
    checkPath path

    if isNull (box tensors) then
        nullArg "tensors"

    if isNull (box metadata) then
        nullArg "metadata"

    let bad (parameter: string) (problem: string) : 'T =
        invalidArg parameter $"Cannot write safetensors file '{path}': {problem}."

    let encodable (s: string) =
        try
            strictUtf8.GetByteCount s |> ignore
            true
        with :? EncoderFallbackException ->
            false

    for KeyValue(k, v) in metadata do
        if isNull v then
            bad "metadata" $"metadata entry '{k}' is null"

        if not (encodable k && encodable v) then
            bad "metadata" $"metadata entry '{k}' is not valid Unicode text"

    let seen = HashSet<string>()

    let checkedTensors =
        tensors
        |> List.mapi (fun i (name, tensor) ->
            if isNull name then
                bad "tensors" $"the name of tensor number {i} is null"

            if name = "__metadata__" then
                bad "tensors" "the name '__metadata__' is reserved for the metadata"

            if not (encodable name) then
                bad "tensors" $"the name of tensor number {i} is not valid Unicode text"

            if not (seen.Add name) then
                bad "tensors" $"tensor '{name}' appears twice"

            if isNull tensor || tensor.IsInvalid then
                bad "tensors" $"tensor '{name}' is null or disposed"

            match dtypeOf tensor.dtype with
            | None ->
                bad
                    "tensors"
                    $"tensor '{name}' has dtype {tensor.dtype}, which is not supported (supported: {supportedText})"
            | Some dtype -> i, name, dtype, Array.copy tensor.shape, tensor)

    let ordered =
        checkedTensors |> List.sortBy (fun (i, _, dtype, _, _) -> -elementSize dtype, i)

    let mutable offset = 0L

    let layout =
        [
            for _, name, dtype, shape, _ in ordered ->
                let bytes = shape |> Array.fold (fun acc d -> acc * d) (int64 (elementSize dtype))

                let first = offset
                offset <- offset + bytes
                name, dtype, shape, first, offset
        ]

    let meta =
        if metadata.ContainsKey "format" then
            metadata
        else
            metadata.Add("format", "pt")

    let header = headerBytes layout meta
    Native.ensureLoaded () |> ignore

    AtomicFile.write path (fun stream ->
        stream.Write(header, 0, header.Length)

        for _, _, _, _, tensor in ordered do
            writeData stream tensor)

/// NumPy `.npy` files without Python: reads format versions 1.0, 2.0 and 3.0 and writes 1.0 (2.0 when
/// the header needs more than 65535 bytes). Element types: little-endian float32 (`<f4`) and float64
/// (`<f8`), and int64 (`<i8`, token ids), C order. Every malformed, truncated or unsupported input is reported as an error that names
/// the problem; a file with bytes after its data is rejected (a shape/size mismatch is never ignored).
/// Writes are atomic: a temporary file in the target's folder, then a rename over the target. Files are
/// read and written whole in memory, so one array is limited to .NET's array size (about 2 GiB).
module LongNet.Npy

open System
open System.Buffers.Binary
open System.IO
open System.Runtime.InteropServices
open System.Text
open TorchSharp

/// The elements of an array, in C (row-major) order.
type NpyData =
    /// float32 elements (`<f4`).
    | Float32 of float32[]
    /// float64 elements (`<f8`).
    | Float64 of float[]
    /// int64 elements (`<i8`): token ids.
    | Int64 of int64[]

/// An n-dimensional array as stored in a `.npy` file: its shape (rank 0 and zero-length axes allowed)
/// and its elements in C order; the element count is the product of the shape (1 for rank 0).
type NpyArray =
    {
        /// The length of each axis, outermost first.
        Shape: int64[]
        /// The elements, in C (row-major) order.
        Data: NpyData
    }

/// The magic string that opens every `.npy` file.
let private magic = [| 0x93uy; byte 'N'; byte 'U'; byte 'M'; byte 'P'; byte 'Y' |]

/// Headers (magic, version, length field and dictionary) are padded to a multiple of this many bytes.
[<Literal>]
let HeaderAlignment = 64

/// The number of elements held by `data`.
let dataLength (data: NpyData) : int =
    match data with
    | Float32 a -> a.Length
    | Float64 a -> a.Length
    | Int64 a -> a.Length

/// The NumPy type descriptor (`<f4`, `<f8` or `<i8`) of `data`.
let descr (data: NpyData) : string =
    match data with
    | Float32 _ -> "<f4"
    | Float64 _ -> "<f8"
    | Int64 _ -> "<i8"

/// The element count of a shape (product of the axes, 1 for rank 0), or None if an axis is negative
/// or the product exceeds Int64.MaxValue.
let elementCount (shape: int64[]) : int64 option =
    if shape |> Array.exists (fun d -> d < 0L) then
        None
    elif shape |> Array.exists (fun d -> d = 0L) then
        Some 0L
    else
        shape
        |> Array.fold
            (fun acc d ->
                match acc with
                | Some n when n <= Int64.MaxValue / d -> Some(n * d)
                | _ -> None)
            (Some 1L)

let private shapeText (shape: int64[]) =
    match shape with
    | [||] -> "()"
    | [| d |] -> $"({d},)"
    | _ -> "(" + String.Join(", ", shape) + ")"

/// Checks that the shape has no negative axis and that its element count equals the data's length.
let validate (array: NpyArray) : Result<unit, string> =
    if isNull (box array) || isNull array.Shape then
        Error "the array or its shape is null"
    else
        match array.Data with
        | Float32 null
        | Float64 null
        | Int64 null -> Error "the array's data is null"
        | data ->
            match elementCount array.Shape with
            | None -> Error $"shape {shapeText array.Shape} has a negative axis or too many elements"
            | Some n when n <> int64 (dataLength data) ->
                Error $"shape {shapeText array.Shape} holds {n} elements but the data has {dataLength data}"
            | Some _ -> Ok()

// ---------------------------------------------------------------------------------------------
// Header dictionary: the small subset of Python literals that `.npy` headers use.

type private PyValue =
    | PyString of string
    | PyBool of bool
    | PyInt of string
    | PyNone
    | PyTuple of PyValue list
    | PyList of PyValue list

/// A parser of the Python dict literal of a header (strings, integers, booleans, None, tuples and lists
/// nested at most `maxDepth` deep); loops rather than recursion over elements, so no input can exhaust
/// the stack, and every problem is an Error.
type private HeaderParser(text: string) =
    let maxDepth = 4
    let mutable pos = 0

    let skipSpace () =
        while pos < text.Length && Char.IsWhiteSpace text.[pos] do
            pos <- pos + 1

    let peek () : char option =
        skipSpace ()
        if pos < text.Length then Some text.[pos] else None

    let describe (c: char option) =
        match c with
        | Some c -> $"'{c}'"
        | None -> "the end of the header"

    let pyString () : Result<string, string> =
        match peek () with
        | Some(('\'' | '"') as quote) ->
            let start = pos
            pos <- pos + 1
            let sb = StringBuilder()
            let mutable closed = false

            while not closed && pos < text.Length do
                let c = text.[pos]

                if c = quote then
                    closed <- true
                elif c = '\\' && pos + 1 < text.Length then
                    pos <- pos + 1
                    sb.Append(text.[pos]) |> ignore
                else
                    sb.Append c |> ignore

                pos <- pos + 1

            if closed then
                Ok(sb.ToString())
            else
                Error $"unterminated string starting at position {start} of the header"
        | c -> Error $"expected a quoted string at position {pos} of the header, found {describe c}"

    let number () : Result<PyValue, string> =
        let start = pos

        if text.[pos] = '-' || text.[pos] = '+' then
            pos <- pos + 1

        let digitsStart = pos

        while pos < text.Length && Char.IsAsciiDigit text.[pos] do
            pos <- pos + 1

        let digits = text.Substring(start, pos - start)
        let hasDigits = pos > digitsStart

        // Python 2 wrote long integers with an `L` suffix.
        if hasDigits && pos < text.Length && (text.[pos] = 'L' || text.[pos] = 'l') then
            pos <- pos + 1

        if
            not hasDigits
            || (pos < text.Length && (Char.IsLetterOrDigit text.[pos] || text.[pos] = '.'))
        then
            Error $"malformed number at position {start} of the header"
        else
            Ok(PyInt digits)

    let word () : Result<PyValue, string> =
        let start = pos

        while pos < text.Length && (Char.IsLetterOrDigit text.[pos] || text.[pos] = '_') do
            pos <- pos + 1

        match text.Substring(start, pos - start) with
        | "True" -> Ok(PyBool true)
        | "False" -> Ok(PyBool false)
        | "None" -> Ok PyNone
        | w -> Error $"unexpected word '{w}' at position {start} of the header"

    /// Parses one value; `depth` counts the enclosing tuples and lists.
    let rec value (depth: int) : Result<PyValue, string> =
        match peek () with
        | None -> Error "the header ends where a value was expected"
        | Some('\'' | '"') -> pyString () |> Result.map PyString
        | Some(('(' | '[') as opening) ->
            if depth >= maxDepth then
                Error $"values nested too deeply at position {pos} of the header"
            else
                pos <- pos + 1
                let closing = if opening = '(' then ')' else ']'
                let items = ResizeArray<PyValue>()
                let mutable result = None

                while result.IsNone do
                    match peek () with
                    | Some c when c = closing ->
                        pos <- pos + 1
                        let xs = List.ofSeq items
                        result <- Some(Ok(if opening = '(' then PyTuple xs else PyList xs))
                    | None -> result <- Some(Error $"missing '{closing}' at the end of the header")
                    | Some _ ->
                        match value (depth + 1) with
                        | Error e -> result <- Some(Error e)
                        | Ok v ->
                            items.Add v

                            match peek () with
                            | Some ',' -> pos <- pos + 1
                            | Some c when c = closing -> ()
                            | c ->
                                result <-
                                    Some(
                                        Error
                                            $"expected ',' or '{closing}' at position {pos} of the header, found {describe c}"
                                    )

                result.Value
        | Some c when Char.IsAsciiDigit c || c = '-' || c = '+' -> number ()
        | Some c when Char.IsAsciiLetter c -> word ()
        | Some c -> Error $"unexpected character '{c}' at position {pos} of the header"

    /// Parses the whole header: one dict literal with string keys, then only whitespace.
    member _.Dict() : Result<(string * PyValue) list, string> =
        match peek () with
        | Some '{' ->
            pos <- pos + 1
            let entries = ResizeArray<string * PyValue>()
            let mutable result = None

            while result.IsNone do
                match peek () with
                | Some '}' ->
                    pos <- pos + 1

                    result <-
                        match peek () with
                        | None -> Some(Ok(List.ofSeq entries))
                        | Some _ -> Some(Error $"unexpected text after the header dictionary at position {pos}")
                | None -> result <- Some(Error "missing '}' at the end of the header")
                | Some _ ->
                    let entry =
                        pyString ()
                        |> Result.bind (fun key ->
                            match peek () with
                            | Some ':' ->
                                pos <- pos + 1
                                value 0 |> Result.map (fun v -> key, v)
                            | c -> Error $"expected ':' at position {pos} of the header, found {describe c}")

                    match entry with
                    | Error e -> result <- Some(Error e)
                    | Ok kv ->
                        entries.Add kv

                        match peek () with
                        | Some ',' -> pos <- pos + 1
                        | Some '}' -> ()
                        | c ->
                            result <-
                                Some(Error $"expected ',' or '}}' at position {pos} of the header, found {describe c}")

            result.Value
        | _ -> Error "the header is not a Python dictionary (it must start with '{')"

type private Dtype =
    | F4
    | F8
    | I8

let private itemSize (dtype: Dtype) =
    match dtype with
    | F4 -> 4
    | F8 -> 8
    | I8 -> 8

let private dtypeName (dtype: Dtype) =
    match dtype with
    | F4 -> "<f4"
    | F8 -> "<f8"
    | I8 -> "<i8"

let private parseDescr (value: PyValue) : Result<Dtype, string> =
    let supported = "supported: '<f4' (float32), '<f8' (float64) and '<i8' (int64)"

    match value with
    | PyString d ->
        let order, kind =
            if d.Length >= 1 && "<>=|".Contains d.[0] then
                d.[0], d.Substring 1
            else
                '|', d

        let little = order = '<' || (order = '=' && BitConverter.IsLittleEndian)
        let big = order = '>' || (order = '=' && not BitConverter.IsLittleEndian)

        match kind with
        | "f4"
        | "f8"
        | "i8" when big -> Error $"big-endian dtype '{d}' is not supported ({supported}); save it little-endian"
        | "f4" when little -> Ok F4
        | "f8" when little -> Ok F8
        | "i8" when little -> Ok I8
        | "O" -> Error $"object arrays (dtype '{d}') are not supported ({supported})"
        | _ -> Error $"unsupported dtype '{d}' ({supported})"
    | PyList _
    | PyTuple _ -> Error "structured (record) dtypes are not supported; supported: '<f4', '<f8' and '<i8'"
    | _ -> Error "the header's 'descr' is not a dtype string"

let private parseShape (value: PyValue) : Result<int64[], string> =
    match value with
    | PyTuple items ->
        let dims =
            items
            |> List.map (fun item ->
                match item with
                | PyInt digits ->
                    match
                        Int64.TryParse(
                            digits,
                            Globalization.NumberStyles.AllowLeadingSign,
                            Globalization.CultureInfo.InvariantCulture
                        )
                    with
                    | true, d when d >= 0L -> Ok d
                    | true, d -> Error $"the shape has a negative axis ({d})"
                    | false, _ -> Error $"the shape has an axis too large for a 64-bit integer ({digits})"
                | _ -> Error "the shape must be a tuple of integers")

        match
            dims
            |> List.tryPick (fun r ->
                match r with
                | Error e -> Some e
                | Ok _ -> None)
        with
        | Some e -> Error e
        | None ->
            Ok(
                dims
                |> List.choose (fun r ->
                    match r with
                    | Ok d -> Some d
                    | Error _ -> None)
                |> Array.ofList
            )
    | _ -> Error "the header's 'shape' is not a tuple of integers"

let private decode (dtype: Dtype) (bytes: byte[]) (offset: int) (count: int) : NpyData =
    let span = ReadOnlySpan<byte>(bytes, offset, count * itemSize dtype)

    match dtype with
    | F4 ->
        if BitConverter.IsLittleEndian then
            Float32(MemoryMarshal.Cast<byte, float32>(span).ToArray())
        else
            Float32(
                Array.init count (fun i ->
                    BinaryPrimitives.ReadSingleLittleEndian(ReadOnlySpan(bytes, offset + 4 * i, 4)))
            )
    | F8 ->
        if BitConverter.IsLittleEndian then
            Float64(MemoryMarshal.Cast<byte, float>(span).ToArray())
        else
            Float64(
                Array.init count (fun i ->
                    BinaryPrimitives.ReadDoubleLittleEndian(ReadOnlySpan(bytes, offset + 8 * i, 8)))
            )
    | I8 ->
        if BitConverter.IsLittleEndian then
            Int64(MemoryMarshal.Cast<byte, int64>(span).ToArray())
        else
            Int64(
                Array.init count (fun i ->
                    BinaryPrimitives.ReadInt64LittleEndian(ReadOnlySpan(bytes, offset + 8 * i, 8)))
            )

/// Parses the bytes of a `.npy` file (versions 1.0, 2.0, 3.0; `<f4`/`<f8`/`<i8`, C order, no trailing bytes).
let parse (bytes: byte[]) : Result<NpyArray, string> =
    if isNull bytes || bytes.Length = 0 then
        Error "the file is empty"
    elif
        bytes.Length < magic.Length
        || not (ReadOnlySpan(bytes, 0, magic.Length).SequenceEqual(ReadOnlySpan magic))
    then
        Error "not a .npy file (wrong magic: it must start with \\x93NUMPY)"
    elif bytes.Length < 8 then
        Error "truncated header: the file ends inside the version number"
    else
        let major, minor = bytes.[6], bytes.[7]

        let lengthField =
            match major, minor with
            | 1uy, 0uy -> Ok 2
            | (2uy | 3uy), 0uy -> Ok 4
            | _ -> Error $"unsupported .npy format version {major}.{minor} (supported: 1.0, 2.0, 3.0)"

        match lengthField with
        | Error e -> Error e
        | Ok fieldSize when bytes.Length < 8 + fieldSize ->
            Error "truncated header: the file ends inside the header length"
        | Ok fieldSize ->
            let headerLength =
                if fieldSize = 2 then
                    int64 (BinaryPrimitives.ReadUInt16LittleEndian(ReadOnlySpan(bytes, 8, 2)))
                else
                    int64 (BinaryPrimitives.ReadUInt32LittleEndian(ReadOnlySpan(bytes, 8, 4)))

            let headerStart = 8 + fieldSize
            let dataStart = int64 headerStart + headerLength

            if dataStart > int64 bytes.Length then
                Error
                    $"truncated header: it declares {headerLength} bytes but the file has {bytes.Length - headerStart} after the length field"
            else
                let encoding = if major = 3uy then Encoding.UTF8 else Encoding.Latin1
                let text = encoding.GetString(bytes, headerStart, int headerLength)

                match HeaderParser(text).Dict() with
                | Error e -> Error $"malformed header: {e}"
                | Ok entries ->
                    let find key =
                        entries |> List.tryFind (fst >> (=) key) |> Option.map snd

                    let known = set [ "descr"; "fortran_order"; "shape" ]

                    match entries |> List.tryFind (fun (k, _) -> not (known.Contains k)) with
                    | Some(k, _) ->
                        Error $"malformed header: unexpected key '{k}' (expected 'descr', 'fortran_order', 'shape')"
                    | None ->
                        match find "descr", find "fortran_order", find "shape" with
                        | None, _, _ -> Error "malformed header: the key 'descr' is missing"
                        | _, None, _ -> Error "malformed header: the key 'fortran_order' is missing"
                        | _, _, None -> Error "malformed header: the key 'shape' is missing"
                        | Some descrValue, Some fortran, Some shapeValue ->
                            match parseDescr descrValue, fortran, parseShape shapeValue with
                            | Error e, _, _ -> Error e
                            | _, PyBool true, _ ->
                                Error "fortran_order: True (column-major) arrays are not supported; save in C order"
                            | _, fo, _ when fo <> PyBool false ->
                                Error "malformed header: 'fortran_order' must be True or False"
                            | _, _, Error e -> Error $"bad shape: {e}"
                            | Ok dtype, _, Ok shape ->
                                let available = int64 bytes.Length - dataStart
                                let size = int64 (itemSize dtype)

                                match elementCount shape with
                                | None -> Error $"bad shape: {shapeText shape} has too many elements"
                                | Some count when count > available / size ->
                                    Error
                                        $"truncated data: shape {shapeText shape} of '{dtypeName dtype}' needs {count * size} bytes but the file has {available} after the header"
                                | Some count when count * size < available ->
                                    Error
                                        $"{available - count * size} unexpected trailing bytes after the data of shape {shapeText shape} (the file is longer than its header declares)"
                                | Some count ->
                                    Ok
                                        {
                                            Shape = shape
                                            Data = decode dtype bytes (int dataStart) (int count)
                                        }

/// Encodes an array as the bytes of a `.npy` file (version 1.0, or 2.0 if the header exceeds 65535
/// bytes; header padded to a multiple of 64 bytes). Raises ArgumentException if the shape and data disagree.
let serialize (array: NpyArray) : byte[] =
    match validate array with
    | Error e -> invalidArg (nameof array) $"cannot serialize the array: {e}."
    | Ok() -> ()

    let dict =
        $"{{'descr': '{descr array.Data}', 'fortran_order': False, 'shape': {shapeText array.Shape}, }}"

    let padded (fieldSize: int) =
        let unpadded = magic.Length + 2 + fieldSize + dict.Length + 1
        let pad = (HeaderAlignment - unpadded % HeaderAlignment) % HeaderAlignment
        dict + String(' ', pad) + "\n"

    let fieldSize, header =
        let v1 = padded 2

        if v1.Length <= int UInt16.MaxValue then
            2, v1
        else
            4, padded 4

    let headerBytes = Encoding.Latin1.GetBytes header
    let dataStart = magic.Length + 2 + fieldSize + headerBytes.Length
    let count = dataLength array.Data

    let itemBytes =
        match array.Data with
        | Float32 _ -> 4
        | Float64 _
        | Int64 _ -> 8

    let out = Array.zeroCreate<byte>(dataStart + count * itemBytes)
    magic.CopyTo(out, 0)
    out.[6] <- (if fieldSize = 2 then 1uy else 2uy)
    out.[7] <- 0uy

    if fieldSize = 2 then
        BinaryPrimitives.WriteUInt16LittleEndian(Span(out, 8, 2), uint16 headerBytes.Length)
    else
        BinaryPrimitives.WriteUInt32LittleEndian(Span(out, 8, 4), uint32 headerBytes.Length)

    headerBytes.CopyTo(out, 8 + fieldSize)

    match array.Data with
    | Float32 a ->
        if BitConverter.IsLittleEndian then
            MemoryMarshal.AsBytes(ReadOnlySpan a).CopyTo(Span(out, dataStart, a.Length * 4))
        else
            a
            |> Array.iteri (fun i x -> BinaryPrimitives.WriteSingleLittleEndian(Span(out, dataStart + 4 * i, 4), x))
    | Float64 a ->
        if BitConverter.IsLittleEndian then
            MemoryMarshal.AsBytes(ReadOnlySpan a).CopyTo(Span(out, dataStart, a.Length * 8))
        else
            a
            |> Array.iteri (fun i x -> BinaryPrimitives.WriteDoubleLittleEndian(Span(out, dataStart + 8 * i, 8), x))
    | Int64 a ->
        if BitConverter.IsLittleEndian then
            MemoryMarshal.AsBytes(ReadOnlySpan a).CopyTo(Span(out, dataStart, a.Length * 8))
        else
            a
            |> Array.iteri (fun i x -> BinaryPrimitives.WriteInt64LittleEndian(Span(out, dataStart + 8 * i, 8), x))

    out

/// Reads a `.npy` file; raises InvalidDataException naming the file and the problem if it is malformed,
/// truncated or of an unsupported kind (big-endian, Fortran order, dtype other than `<f4`/`<f8`/`<i8`).
let read (path: string) : NpyArray =
    match parse (File.ReadAllBytes path) with
    | Ok array -> array
    | Error e -> raise (InvalidDataException $"Cannot read .npy file '{path}': {e}.")

/// Writes an array as a `.npy` file, atomically (see `AtomicFile.writeVia`: the folder must exist; an
/// IOException names the file); raises ArgumentException if the shape and data disagree (nothing is
/// written then).
let write (path: string) (array: NpyArray) : unit =
    serialize array |> AtomicFile.writeBytes path

// ---------------------------------------------------------------------------------------------
// Tensor bridge.

/// A CPU tensor of the array's dtype (float32, float64 or int64) and shape, holding a copy of its elements.
let toTensor (array: NpyArray) : torch.Tensor =
    match validate array with
    | Error e -> invalidArg (nameof array) $"cannot convert the array to a tensor: {e}."
    | Ok() -> ()

    Native.ensureLoaded () |> ignore

    match array.Data with
    | Float32 a -> torch.tensor (a, ReadOnlySpan<int64> array.Shape, dtype = torch.float32)
    | Float64 a -> torch.tensor (a, ReadOnlySpan<int64> array.Shape, dtype = torch.float64)
    | Int64 a -> torch.tensor (a, ReadOnlySpan<int64> array.Shape, dtype = torch.int64)

/// The shape and elements (C order, copied to the CPU) of a float32, float64 or int64 tensor of any device and
/// layout; raises ArgumentException naming `tensor` for other dtypes.
let ofTensor (tensor: torch.Tensor) : NpyArray =
    if isNull tensor then
        nullArg (nameof tensor)

    Native.ensureLoaded () |> ignore

    match tensor.dtype with
    | torch.ScalarType.Float32
    | torch.ScalarType.Float64
    | torch.ScalarType.Int64 -> ()
    | other ->
        invalidArg
            (nameof tensor)
            $"only float32, float64 and int64 tensors can be stored as .npy (allowed dtypes: Float32, Float64, Int64), got {other}."

    use _scope = torch.NewDisposeScope()
    let c = tensor.detach().cpu().contiguous()
    let shape = Array.copy c.shape
    let count = int c.NumberOfElements

    let data =
        match c.dtype with
        | torch.ScalarType.Float32 ->
            Float32(
                if count = 0 then
                    [||]
                else
                    MemoryMarshal.Cast<byte, float32>(c.bytes).ToArray()
            )
        | torch.ScalarType.Int64 ->
            Int64(
                if count = 0 then
                    [||]
                else
                    MemoryMarshal.Cast<byte, int64>(c.bytes).ToArray()
            )
        | _ ->
            Float64(
                if count = 0 then
                    [||]
                else
                    MemoryMarshal.Cast<byte, float>(c.bytes).ToArray()
            )

    { Shape = shape; Data = data }

/// Reads a `.npy` file as a CPU tensor of its dtype and shape (see read and toTensor).
let readTensor (path: string) : torch.Tensor = read path |> toTensor

/// Writes a float32, float64 or int64 tensor as a `.npy` file, atomically (see ofTensor and write).
let writeTensor (path: string) (tensor: torch.Tensor) : unit = ofTensor tensor |> write path

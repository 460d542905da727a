module LongNet.Tests.NpyTests

open System
open System.Buffers.Binary
open System.IO
open System.Text
open System.Text.Json
open Xunit
open FsCheck
open FsCheck.FSharp
open FsCheck.Xunit
open TorchSharp
open LongNet
open LongNet.Npy
open LongNet.Tests.TestSupport

// ---------------------------------------------------------------------------------------------
// Helpers.

let private vectorsDir =
    Path.Combine(AppContext.BaseDirectory, "vectors", "dilated")

let private bits64 (a: float[]) =
    a |> Array.map BitConverter.DoubleToInt64Bits

let private bits32 (a: float32[]) =
    a |> Array.map BitConverter.SingleToInt32Bits

/// True when two arrays have the same shape, dtype and element bits.
let private identical (a: NpyArray) (b: NpyArray) =
    a.Shape = b.Shape
    && match a.Data, b.Data with
       | Float64 x, Float64 y -> bits64 x = bits64 y
       | Float32 x, Float32 y -> bits32 x = bits32 y
       | _ -> false

/// The bytes of a `.npy` file with the given version and header text, header padded to 64 bytes
/// and terminated by '\n', followed by `data`.
let private handMade (major: byte) (header: string) (data: byte[]) =
    let fieldSize = if major = 1uy then 2 else 4
    let encoding = if major = 3uy then Encoding.UTF8 else Encoding.Latin1
    let raw = encoding.GetBytes header
    let unpadded = 8 + fieldSize + raw.Length + 1
    let pad = (64 - unpadded % 64) % 64
    let headerBytes = Array.concat [ raw; Array.create pad (byte ' '); [| byte '\n' |] ]
    let prefix = Array.zeroCreate<byte>(8 + fieldSize)
    Array.blit [| 0x93uy; byte 'N'; byte 'U'; byte 'M'; byte 'P'; byte 'Y'; major; 0uy |] 0 prefix 0 8

    if fieldSize = 2 then
        BinaryPrimitives.WriteUInt16LittleEndian(Span(prefix, 8, 2), uint16 headerBytes.Length)
    else
        BinaryPrimitives.WriteUInt32LittleEndian(Span(prefix, 8, 4), uint32 headerBytes.Length)

    Array.concat [ prefix; headerBytes; data ]

let private doublesBytes (xs: float[]) =
    let out = Array.zeroCreate<byte>(8 * xs.Length)

    xs
    |> Array.iteri (fun i x -> BinaryPrimitives.WriteDoubleLittleEndian(Span(out, 8 * i, 8), x))

    out

let private v1 header data = handMade 1uy header data

/// Asserts that parsing fails with a message containing every fragment (case-insensitive).
let private expectError (bytes: byte[]) (fragments: string list) =
    match parse bytes with
    | Ok a -> failwith $"expected an error, parsed shape %A{a.Shape}"
    | Error message ->
        for f in fragments do
            Assert.True(
                message.Contains(f, StringComparison.OrdinalIgnoreCase),
                $"message '{message}' should mention '{f}'"
            )

// ---------------------------------------------------------------------------------------------
// Generators.

let private genShape: Gen<int64[]> =
    gen {
        let! rank = Gen.choose (0, 4)
        let! dims = Gen.arrayOfLength rank (Gen.choose (0, 4))
        return dims |> Array.map int64
    }

let private genFloat64: Gen<float> =
    let special =
        Gen.elements
            [
                nan
                -nan
                BitConverter.Int64BitsToDouble 0x7FF0000000000001L // a signalling NaN with a payload
                infinity
                -infinity
                0.0
                -0.0
                Double.Epsilon
                Double.MaxValue
                Double.MinValue
                1.0 / 3.0
            ]

    let anyBits =
        Gen.choose64 (Int64.MinValue, Int64.MaxValue)
        |> Gen.map BitConverter.Int64BitsToDouble

    Gen.frequency [ 1, special; 3, anyBits ]

let private genFloat32: Gen<float32> =
    let special =
        Gen.elements
            [
                nanf
                -nanf
                BitConverter.Int32BitsToSingle 0x7F800001 // a signalling NaN with a payload
                infinityf
                -infinityf
                0.0f
                -0.0f
                Single.Epsilon
                Single.MaxValue
                Single.MinValue
                1.0f / 3.0f
            ]

    let anyBits =
        Gen.choose64 (int64 Int32.MinValue, int64 Int32.MaxValue)
        |> Gen.map (int32 >> BitConverter.Int32BitsToSingle)

    Gen.frequency [ 1, special; 3, anyBits ]

let private genArray: Gen<NpyArray> =
    gen {
        let! shape = genShape
        let count = shape |> Array.fold (fun n d -> n * int d) 1
        let! double = Gen.elements [ true; false ]

        if double then
            let! xs = Gen.arrayOfLength count genFloat64
            return { Shape = shape; Data = Float64 xs }
        else
            let! xs = Gen.arrayOfLength count genFloat32
            return { Shape = shape; Data = Float32 xs }
    }

let private arbArray = Arb.fromGen genArray

// ---------------------------------------------------------------------------------------------
// Reference vectors.

let private cases () =
    use doc =
        JsonDocument.Parse(File.ReadAllText(Path.Combine(vectorsDir, "cases.json")))

    [
        for case in doc.RootElement.GetProperty("cases").EnumerateArray() do
            let id = case.GetProperty("id").GetString()

            let shape =
                [| for d in case.GetProperty("shape").EnumerateArray() -> d.GetInt64() |]

            let files =
                [
                    for f in case.GetProperty("files").EnumerateObject() -> f.Name, f.Value.GetString()
                ]

            id, shape, files
    ]

[<Fact>]
let ``reference vectors parse with the shapes listed in cases.json`` () =
    let all = cases ()
    Assert.NotEmpty all

    for id, shape, files in all do
        Assert.NotEmpty files

        for role, file in files do
            let array = read (Path.Combine(vectorsDir, file))
            Assert.True((array.Shape = shape), $"{id}/{role}: shape %A{array.Shape}, cases.json says %A{shape}")

            match array.Data with
            | Float64 xs ->
                Assert.True(xs |> Array.forall Double.IsFinite, $"{id}/{role}: non-finite values")
                Assert.True(xs.Length > 0, $"{id}/{role}: no data")
            | Float32 _
            | Int64 _ -> failwith $"{id}/{role}: expected float64 data"

[<Fact>]
let ``every npy file in the reference folder is listed in cases.json`` () =
    let listed =
        cases () |> List.collect (fun (_, _, files) -> files |> List.map snd) |> set

    let present =
        Directory.GetFiles(vectorsDir, "*.npy") |> Array.map Path.GetFileName |> set

    Assert.Equal<Set<string>>(present, listed)

[<Fact>]
let ``re-serializing a reference vector reproduces NumPy's header dictionary and data bytes`` () =
    for _, _, files in cases () do
        for _, file in files do
            let original = File.ReadAllBytes(Path.Combine(vectorsDir, file))
            let ours = read (Path.Combine(vectorsDir, file)) |> serialize

            let dictionary (bytes: byte[]) =
                let length =
                    int (BinaryPrimitives.ReadUInt16LittleEndian(ReadOnlySpan(bytes, 8, 2)))

                Encoding.Latin1.GetString(bytes, 10, length).Trim(), 10 + length

            let dictOriginal, startOriginal = dictionary original
            let dictOurs, startOurs = dictionary ours
            Assert.Equal(dictOriginal, dictOurs)
            Assert.Equal<byte[]>(original.[startOriginal..], ours.[startOurs..])

// ---------------------------------------------------------------------------------------------
// Round trips and layout.

[<Property(MaxTest = 300)>]
let ``serialize then parse round-trips any shape and any float32 or float64 values bit for bit`` () =
    Prop.forAll arbArray (fun array ->
        match parse (serialize array) with
        | Ok back -> identical array back
        | Error e -> failwith e)

[<Property(MaxTest = 200)>]
let ``headers are padded to a multiple of 64 bytes and the file is exactly header plus data`` () =
    Prop.forAll arbArray (fun array ->
        let bytes = serialize array

        let headerLength =
            int (BinaryPrimitives.ReadUInt16LittleEndian(ReadOnlySpan(bytes, 8, 2)))

        let total = 10 + headerLength

        let itemSize =
            match array.Data with
            | Float32 _ -> 4
            | Float64 _
            | Int64 _ -> 8

        bytes.[6] = 1uy
        && bytes.[7] = 0uy
        && total % 64 = 0
        && bytes.[total - 1] = byte '\n'
        && bytes.Length = total + itemSize * dataLength array.Data)

[<Property(MaxTest = 300)>]
let ``parse never throws on random bytes or on damaged valid files`` () =
    let damaged =
        gen {
            let! array = genArray
            let bytes = serialize array
            let! cut = Gen.choose (0, bytes.Length)

            let! flips =
                Gen.listOf (Gen.zip (Gen.choose (0, max 0 (cut - 1))) (Gen.choose (0, 255)))

            let copy = Array.sub bytes 0 cut

            for i, b in flips do
                if i < copy.Length then
                    copy.[i] <- byte b

            return copy
        }

    let random = Gen.arrayOf (Gen.choose (0, 255) |> Gen.map byte)

    Prop.forAll (Arb.fromGen (Gen.oneof [ damaged; random ])) (fun bytes ->
        match parse bytes with
        | Ok _
        | Error _ -> true)

[<Fact>]
let ``version 2.0 and 3.0 headers are read`` () =
    let data = [| 1.5; -2.0; nan; infinity; 0.0; -0.0 |]

    for major in [ 2uy; 3uy ] do
        let bytes =
            handMade major "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }" (doublesBytes data)

        match parse bytes with
        | Ok array ->
            Assert.Equal<int64[]>([| 2L; 3L |], array.Shape)

            match array.Data with
            | Float64 xs -> Assert.Equal<int64[]>(bits64 data, bits64 xs)
            | Float32 _
            | Int64 _ -> failwith "expected float64"
        | Error e -> failwith $"version {major}: {e}"

[<Fact>]
let ``headers in other legal spellings are read`` () =
    let data = doublesBytes [| 1.0; 2.0 |]

    for header in
        [
            "{\"descr\": \"<f8\", \"fortran_order\": False, \"shape\": (2,)}"
            "{'shape': (2L,), 'fortran_order': False, 'descr': '=f8'}"
            "{ 'descr' : '<f8' ,'fortran_order':False,'shape':( 2 , ) , }"
        ] do
        match parse (v1 header data) with
        | Ok array -> Assert.Equal<int64[]>([| 2L |], array.Shape)
        | Error e -> failwith $"{header}: {e}"

[<Fact>]
let ``headers longer than 65535 bytes are written as version 2.0 and read back`` () =
    let array =
        {
            Shape = Array.create 30000 1L
            Data = Float32 [| 42.0f |]
        }

    let bytes = serialize array
    Assert.Equal(2uy, bytes.[6])

    let headerLength =
        int (BinaryPrimitives.ReadUInt32LittleEndian(ReadOnlySpan(bytes, 8, 4)))

    Assert.Equal(0, (12 + headerLength) % 64)
    Assert.True(headerLength > 65535)

    match parse bytes with
    | Ok back -> Assert.True(identical array back)
    | Error e -> failwith e

[<Fact>]
let ``rank 0 and empty arrays round-trip`` () =
    for array in
        [
            {
                Shape = [||]
                Data = Float64 [| 3.25 |]
            }
            {
                Shape = [| 0L |]
                Data = Float32 [||]
            }
            {
                Shape = [| 3L; 0L; 2L |]
                Data = Float64 [||]
            }
        ] do
        match parse (serialize array) with
        | Ok back -> Assert.True(identical array back, $"%A{array.Shape}")
        | Error e -> failwith e

// ---------------------------------------------------------------------------------------------
// Bad inputs.

let private goodHeader =
    "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }"

let private sixDoubles = doublesBytes [| 1.0; 2.0; 3.0; 4.0; 5.0; 6.0 |]

[<Fact>]
let ``an empty file is reported as empty`` () = expectError [||] [ "empty" ]

[<Fact>]
let ``a wrong magic string is reported`` () =
    let bytes = v1 goodHeader sixDoubles
    bytes.[1] <- byte 'X'
    expectError bytes [ "magic" ]
    expectError (Encoding.ASCII.GetBytes "PK\003\004 this is a zip") [ "magic" ]

[<Fact>]
let ``big-endian data is rejected`` () =
    expectError (v1 "{'descr': '>f8', 'fortran_order': False, 'shape': (2, 3), }" sixDoubles) [ "big-endian"; ">f8" ]

[<Fact>]
let ``Fortran-order arrays are rejected`` () =
    expectError (v1 "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }" sixDoubles) [ "fortran" ]

[<Fact>]
let ``truncated data is reported with the sizes involved`` () =
    let bytes = v1 goodHeader sixDoubles
    expectError bytes.[.. bytes.Length - 2] [ "truncated"; "48 bytes"; "47" ]

[<Fact>]
let ``a truncated header is reported`` () =
    let bytes = v1 goodHeader sixDoubles
    expectError bytes.[..20] [ "truncated header" ]
    expectError bytes.[..8] [ "truncated header" ]

[<Fact>]
let ``trailing bytes after the data are rejected`` () =
    expectError (v1 goodHeader (Array.append sixDoubles [| 0uy |])) [ "trailing" ]

[<Fact>]
let ``bad shape text is reported`` () =
    let withShape shape =
        v1 $"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}" sixDoubles

    expectError (withShape "(2, x)") [ "header"; "x" ]
    expectError (withShape "(-2, 3)") [ "shape"; "negative" ]
    expectError (withShape "(2, 3") [ "header" ]
    expectError (withShape "[2, 3]") [ "shape" ]
    expectError (withShape "(2.5, 3)") [ "number" ]
    expectError (withShape "(99999999999999999999, 3)") [ "shape"; "too large" ]
    expectError (withShape "(4294967296, 4294967296, 4294967296)") [ "shape"; "too many elements" ]
    expectError (withShape "((((((2))))))") [ "nested" ]

[<Fact>]
let ``unsupported descr values are reported`` () =
    let withDescr descr =
        v1 $"{{'descr': {descr}, 'fortran_order': False, 'shape': (2, 3), }}" sixDoubles

    expectError (withDescr "'<i2'") [ "unsupported dtype"; "<i2"; "<f8" ]
    expectError (withDescr "'|O'") [ "object" ]
    expectError (withDescr "'<c16'") [ "unsupported dtype" ]
    expectError (withDescr "[('a', '<f8')]") [ "structured" ]

[<Fact>]
let ``malformed headers and versions are reported`` () =
    expectError (v1 "{'descr': '<f8', 'shape': (2, 3), }" sixDoubles) [ "fortran_order"; "missing" ]
    expectError (v1 "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), 'x': 1}" sixDoubles) [ "unexpected key" ]
    expectError (v1 "['descr', '<f8']" sixDoubles) [ "dictionary" ]
    expectError (v1 "{'descr': '<f8', 'fortran_order': Maybe, 'shape': (2, 3)}" sixDoubles) [ "Maybe" ]
    expectError (v1 "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3)} extra" sixDoubles) [ "after" ]
    expectError (v1 "{'descr: '<f8'" sixDoubles) [ "header" ]
    let bytes = v1 goodHeader sixDoubles
    bytes.[6] <- 4uy
    expectError bytes [ "version 4.0" ]

[<Fact>]
let ``read names the file and the problem`` () =
    use dir = new TempDir("npy")
    let path = dir.File "big.npy"
    File.WriteAllBytes(path, v1 "{'descr': '>f8', 'fortran_order': False, 'shape': (2, 3), }" sixDoubles)
    let e = Assert.Throws<InvalidDataException>(fun () -> read path |> ignore)
    Assert.Contains(path, e.Message)
    Assert.Contains("big-endian", e.Message)

[<Fact>]
let ``serialize rejects a shape that disagrees with the data`` () =
    let e =
        Assert.Throws<ArgumentException>(fun () ->
            serialize
                {
                    Shape = [| 2L; 2L |]
                    Data = Float64 [| 1.0 |]
                }
            |> ignore)

    Assert.Equal("array", e.ParamName)
    Assert.Contains("4 elements", e.Message)

    Assert.Throws<ArgumentException>(fun () ->
        serialize
            {
                Shape = [| -1L |]
                Data = Float64 [||]
            }
        |> ignore)
    |> ignore

// ---------------------------------------------------------------------------------------------
// Files and atomic writes.

[<Fact>]
let ``write then read round-trips and leaves no temporary file`` () =
    use dir = new TempDir("npy")
    let path = dir.File "a.npy"

    let array =
        {
            Shape = [| 2L; 3L |]
            Data = Float64 [| 1.0; 2.0; 3.0; 4.0; 5.0; 6.0 |]
        }

    write path array

    write
        path
        { array with
            Data = Float64 [| 6.0; 5.0; 4.0; 3.0; 2.0; 1.0 |]
        }

    Assert.True(
        identical
            { array with
                Data = Float64 [| 6.0; 5.0; 4.0; 3.0; 2.0; 1.0 |]
            }
            (read path)
    )

    Assert.Equal<string[]>([| path |], Directory.GetFiles dir.Path)

[<Fact>]
let ``a write that fails to serialize leaves the existing file intact`` () =
    use dir = new TempDir("npy")
    let path = dir.File "keep.npy"

    let original =
        {
            Shape = [| 2L |]
            Data = Float32 [| 1.0f; 2.0f |]
        }

    write path original
    let before = File.ReadAllBytes path

    Assert.Throws<ArgumentException>(fun () ->
        write
            path
            {
                Shape = [| 3L |]
                Data = Float32 [| 1.0f |]
            })
    |> ignore

    Assert.Equal<byte[]>(before, File.ReadAllBytes path)
    Assert.Equal<string[]>([| path |], Directory.GetFiles dir.Path)

[<Fact>]
let ``writing into a missing folder raises an IOException naming the target`` () =
    use dir = new TempDir("npy")
    let path = Path.Combine(dir.Path, "missing", "x.npy")

    let array =
        {
            Shape = [| 1L |]
            Data = Float64 [| 1.0 |]
        }

    let e = Assert.ThrowsAny<IOException>(fun () -> write path array)
    Assert.Contains(path, e.Message)
    Assert.Empty(Directory.GetFileSystemEntries dir.Path)

[<Fact>]
let ``writing over a directory of the target's name raises and leaves it alone`` () =
    use dir = new TempDir("npy")
    let path = dir.File "taken.npy"
    Directory.CreateDirectory path |> ignore
    File.WriteAllText(Path.Combine(path, "inside.txt"), "keep me")

    let array =
        {
            Shape = [| 1L |]
            Data = Float64 [| 1.0 |]
        }

    let e = Assert.ThrowsAny<IOException>(fun () -> write path array)
    Assert.Contains(path, e.Message)
    Assert.Equal("keep me", File.ReadAllText(Path.Combine(path, "inside.txt")))
    Assert.Equal<string[]>([| path |], Directory.GetFileSystemEntries dir.Path)

// ---------------------------------------------------------------------------------------------
// Tensor bridge.

let private loaded = lazy (Native.ensureLoaded () |> ignore)

let private tensorRoundTrip (dtype: torch.ScalarType) =
    loaded.Force()
    use t = torch.randn ([| 2L; 5L; 3L; 4L |], dtype = dtype)
    let array = ofTensor t
    Assert.Equal<int64[]>([| 2L; 5L; 3L; 4L |], array.Shape)

    match parse (serialize array) with
    | Error e -> failwith e
    | Ok back ->
        use t2 = toTensor back
        Assert.Equal(dtype, t2.dtype)
        Assert.Equal<int64[]>(t.shape, t2.shape)
        Assert.Equal(torch.CPU.``type``, t2.device_type)
        Assert.True(identical array (ofTensor t2))
        Assert.True(t.allclose (t2, rtol = 0.0, atol = 0.0))

[<Fact>]
let ``a random float64 tensor round-trips through npy bit for bit`` () = tensorRoundTrip torch.float64

[<Fact>]
let ``a random float32 tensor round-trips through npy bit for bit`` () = tensorRoundTrip torch.float32

[<Fact>]
let ``writeTensor then readTensor gives an identical tensor`` () =
    loaded.Force()
    use dir = new TempDir("npy")
    let path = dir.File "t.npy"
    use t = torch.randn ([| 3L; 4L |], dtype = torch.float64)
    writeTensor path t
    use back = readTensor path
    Assert.True(identical (ofTensor t) (ofTensor back))

[<Fact>]
let ``ofTensor stores transposed and offset views in C order`` () =
    loaded.Force()
    use base' = torch.arange (24.0, dtype = torch.float64)
    use m = base'.reshape (4L, 6L)
    use transposed = m.t ()
    use row = m.[2L]

    let tr = ofTensor transposed
    Assert.Equal<int64[]>([| 6L; 4L |], tr.Shape)

    Assert.True(
        identical
            tr
            {
                Shape = [| 6L; 4L |]
                Data =
                    Float64
                        [|
                            for j in 0..5 do
                                for i in 0..3 -> float (6 * i + j)
                        |]
            }
    )

    let r = ofTensor row

    Assert.True(
        identical
            r
            {
                Shape = [| 6L |]
                Data = Float64 [| 12.0 .. 17.0 |]
            }
    )

[<Fact>]
let ``toTensor copies the data and handles rank 0 and empty arrays`` () =
    let data = [| 1.0; 2.0 |]

    use t =
        toTensor
            {
                Shape = [| 2L |]
                Data = Float64 data
            }

    data.[0] <- 99.0
    Assert.Equal(1.0, t.[0L].item<float>())

    for array in
        [
            {
                Shape = [||]
                Data = Float64 [| 3.25 |]
            }
            {
                Shape = [| 0L; 3L |]
                Data = Float32 [||]
            }
        ] do
        use t = toTensor array
        Assert.Equal<int64[]>(array.Shape, t.shape)
        Assert.True(identical array (ofTensor t))

[<Fact>]
let ``ofTensor rejects bfloat16, float16 and int32 tensors naming the tensor parameter`` () =
    loaded.Force()

    for dtype in [ torch.bfloat16; torch.int32; torch.float16 ] do
        use t = torch.ones ([| 2L |], dtype = dtype)
        let e = Assert.Throws<ArgumentException>(fun () -> ofTensor t |> ignore)
        Assert.Equal("tensor", e.ParamName)
        Assert.Contains("Float32", e.Message)
        Assert.Contains("Float64", e.Message)
        Assert.Contains("Int64", e.Message)

[<Fact>]
let ``int64 token ids round-trip through npy and read as '<i8' by the header`` () =
    loaded.Force()

    use ids =
        torch.tensor([| 0L; 1L; -5L; Int64.MaxValue; 4096L; 7L |], dtype = torch.int64).view(2L, 3L)

    let bytes = serialize (ofTensor ids)
    let header = Text.Encoding.Latin1.GetString(bytes, 10, 60)
    Assert.Contains("'descr': '<i8'", header)

    match parse bytes with
    | Error e -> failwith e
    | Ok array ->
        use back = toTensor array
        Assert.Equal(torch.ScalarType.Int64, back.dtype)
        Assert.True(back.eq(ids: torch.Tensor).all().item<bool>())

/// Safetensors reader, writer and Hugging Face folder loader: bit-exact round trips for every dtype and
/// odd shapes, files built byte by byte from the published format read by the reader, the writer's output
/// checked by an independent parser, mapped and copied loads agreeing, every malformed input reported
/// with the file and tensor, sharded folders, and a mapped 200 MB load that does not copy the file.
module LongNet.Tests.Interop.SafeTensorsTests

open System
open System.Buffers.Binary
open System.IO
open System.Text
open System.Text.Json
open Xunit
open TorchSharp
open LongNet
open LongNet.Interop
open LongNet.Interop.SafeTensors
open LongNet.Tests.TestSupport

// ---------------------------------------------------------------------------------------------
// Helpers (none of them use the code under test).

/// The raw bytes of a tensor's elements in C order, from a contiguous CPU copy.
let private bytesOf (t: torch.Tensor) : byte[] =
    use c = t.detach().cpu().contiguous()

    if c.NumberOfElements = 0L then [||] else c.bytes.ToArray()

/// A tensor of `dtype` and `shape` holding random bit patterns (NaN payloads, subnormals and infinities
/// included for floats; only 0 and 1 for BOOL).
let private sample (rng: Random) (dtype: Dtype) (shape: int64[]) : torch.Tensor =
    let t = torch.empty (shape, dtype = scalarType dtype)
    let count = int t.NumberOfElements * int t.ElementSize

    if count > 0 then
        let raw = Array.zeroCreate<byte> count
        rng.NextBytes raw

        if dtype = BOOL then
            for i in 0 .. raw.Length - 1 do
                raw.[i] <- raw.[i] &&& 1uy

        t.bytes <- Span raw

    t

/// The bytes of a safetensors file built by hand from the published format: the u64 little-endian
/// length of `json` padded with `pad` spaces, the header, then `data`.
let private handMade (json: string) (pad: int) (data: byte[]) : byte[] =
    let header = Encoding.UTF8.GetBytes(json + String(' ', pad))
    use buffer = new MemoryStream()

    do
        use w = new BinaryWriter(buffer, Encoding.UTF8, true)
        w.Write(uint64 header.Length)
        w.Write header
        w.Write data

    buffer.ToArray()

/// Padding that makes an 8-byte prefix plus `json` a multiple of 8 bytes.
let private padFor (json: string) =
    (8 - Encoding.UTF8.GetByteCount json % 8) % 8

let private f32Bytes (xs: float32[]) =
    let out = Array.zeroCreate<byte>(4 * xs.Length)

    xs
    |> Array.iteri (fun i x -> BinaryPrimitives.WriteSingleLittleEndian(Span(out, 4 * i, 4), x))

    out

/// One tensor as an independent parser of a file sees it.
type private Parsed =
    {
        Dtype: string
        Shape: int64[]
        Begin: int64
        End: int64
        Data: byte[]
    }

/// An independent minimal parser of the published format: (header length, metadata, tensors by name).
/// Checks the data is covered exactly and returns each tensor's bytes.
let private parseIndependently (bytes: byte[]) =
    let n = int (BinaryPrimitives.ReadUInt64LittleEndian(ReadOnlySpan(bytes, 0, 8)))
    let dataStart = 8 + n
    use doc = JsonDocument.Parse(ReadOnlyMemory(bytes, 8, n))
    let mutable metadata = Map.empty
    let mutable tensors = Map.empty

    for p in doc.RootElement.EnumerateObject() do
        if p.Name = "__metadata__" then
            for m in p.Value.EnumerateObject() do
                metadata <- metadata.Add(m.Name, m.Value.GetString())
        else
            let offsets = p.Value.GetProperty "data_offsets"
            let b, e = offsets.[0].GetInt64(), offsets.[1].GetInt64()

            tensors <-
                tensors.Add(
                    p.Name,
                    {
                        Dtype = p.Value.GetProperty("dtype").GetString()
                        Shape = [| for d in p.Value.GetProperty("shape").EnumerateArray() -> d.GetInt64() |]
                        Begin = b
                        End = e
                        Data = bytes.[dataStart + int b .. dataStart + int e - 1]
                    }
                )

    let covered =
        tensors
        |> Map.toList
        |> List.map snd
        |> List.sortBy (fun t -> t.Begin, t.End)
        |> List.fold (fun cursor t -> if t.Begin = cursor then t.End else -1L) 0L

    Assert.Equal(int64 (bytes.Length - dataStart), covered)
    n, metadata, tensors

/// Asserts that `action` raises `'E` whose message mentions every fragment; returns the message.
let private raisesWith<'E when 'E :> exn> (fragments: string list) (action: unit -> unit) : string =
    let e = Assert.ThrowsAny<'E>(Action action)

    for f in fragments do
        Assert.True(e.Message.Contains(f, StringComparison.Ordinal), $"message '{e.Message}' should mention '{f}'")

    e.Message

let private disposeAll (tensors: (string * torch.Tensor) list) =
    for _, t in tensors do
        t.Dispose()

/// Loads with `mode` and disposes the tensors after `check`.
let private withLoaded (mode: LoadMode) (path: string) (check: Map<string, torch.Tensor> -> unit) =
    let loaded = loadWith mode path None

    try
        check (Map.ofList loaded)
    finally
        disposeAll loaded

/// Asserts shape, dtype and bits of `actual` equal `expected`'s.
let private assertSame (name: string) (expected: torch.Tensor) (actual: torch.Tensor) =
    Assert.True((expected.shape = actual.shape), $"{name}: shape {actual.shape} <> {expected.shape}")
    Assert.Equal(expected.dtype, actual.dtype)
    Assert.Equal<byte[]>(bytesOf expected, bytesOf actual)

// ---------------------------------------------------------------------------------------------
// Round trips.

[<Fact>]
let ``every dtype and odd shapes round-trip bit for bit, mapped or copied`` () =
    Native.ensureLoaded () |> ignore
    use dir = new TempDir "safetensors-roundtrip"
    let rng = Random 16

    let shapes =
        [ [||]; [| 0L |]; [| 2L; 0L; 3L |]; [| 1L |]; [| 3L; 5L; 7L |]; [| 97L |] ]

    // widest and narrowest dtypes interleaved, so the writer must reorder to align them
    let tensors =
        [
            for d in [ U8; F32; BOOL; F64; BF16; I8; F16; I64; I16; I32 ] do
                for i, s in List.indexed shapes -> $"{dtypeName d}.{i}", sample rng d s
        ]

    try
        let path = dir.File "all.safetensors"
        write path tensors Map.empty

        for mode in [ MapWherePossible; CopyAlways ] do
            withLoaded mode path (fun loaded ->
                Assert.Equal(tensors.Length, loaded.Count)

                for name, t in tensors do
                    assertSame name t loaded.[name])
    finally
        disposeAll tensors

[<Fact>]
let ``non-contiguous inputs are written as their values in C order`` () =
    Native.ensureLoaded () |> ignore
    use dir = new TempDir "safetensors-strided"
    use _scope = torch.NewDisposeScope()
    let rng = Random 3
    let baseT = sample rng F32 [| 6L; 10L |]
    let transposed = baseT.t ()

    let strided =
        baseT.narrow(1L, 1L, 7L).index_select(1L, torch.tensor [| 0L; 2L; 4L; 6L |])

    let stepped = baseT.slice (1L, 1L, 10L, 3L)
    let expanded = torch.tensor([| 1.5f; -2.0f; 3.25f |]).expand(4L, 3L)
    Assert.False(transposed.is_contiguous ())
    Assert.False(stepped.is_contiguous ())
    let path = dir.File "strided.safetensors"

    let inputs = [ "t", transposed; "s", strided; "k", stepped; "e", expanded ]

    write path inputs Map.empty
    let _, _, parsed = parseIndependently (File.ReadAllBytes path)

    for name, t in inputs do
        Assert.Equal<int64[]>(t.shape, parsed.[name].Shape)
        Assert.Equal<byte[]>(bytesOf t, parsed.[name].Data)

    withLoaded MapWherePossible path (fun loaded ->
        for name, t in inputs do
            assertSame name t loaded.[name])

[<Fact>]
let ``the writer's output follows the published format (independent parser)`` () =
    Native.ensureLoaded () |> ignore
    use dir = new TempDir "safetensors-format"
    use _scope = torch.NewDisposeScope()
    let rng = Random 7

    let inputs =
        [
            "model.norm.weight", sample rng BF16 [| 5L |]
            "flag", sample rng BOOL [| 3L |]
            "model.embed_tokens.weight", sample rng F32 [| 7L; 3L |]
            "step", sample rng I64 [||]
            "μ \"quoted\" name", sample rng F16 [| 2L; 1L |]
        ]

    let path = dir.File "format.safetensors"
    write path inputs (Map.ofList [ "source", "test" ])
    let bytes = File.ReadAllBytes path
    let n, metadata, parsed = parseIndependently bytes
    Assert.Equal(0, (8 + n) % 8)
    // the padding is spaces
    Assert.Equal(byte '}', bytes.[8 + Encoding.UTF8.GetString(bytes, 8, n).TrimEnd(' ').Length - 1])
    Assert.Equal<Map<string, string>>(Map.ofList [ "format", "pt"; "source", "test" ], metadata)

    let sizes = Map.ofList [ "F32", 4L; "F16", 2L; "BF16", 2L; "I64", 8L; "BOOL", 1L ]

    let names =
        Map.ofList
            [
                "model.norm.weight", "BF16"
                "flag", "BOOL"
                "model.embed_tokens.weight", "F32"
                "step", "I64"
                "μ \"quoted\" name", "F16"
            ]

    for name, t in inputs do
        let p = parsed.[name]
        Assert.Equal(names.[name], p.Dtype)
        Assert.Equal<int64[]>(t.shape, p.Shape)
        Assert.Equal<byte[]>(bytesOf t, p.Data)
        Assert.Equal(0L, (int64 (8 + n) + p.Begin) % sizes.[p.Dtype])

    // a caller's own "format" is kept
    write path [ "x", inputs.Head |> snd ] (Map.ofList [ "format", "mlx" ])
    let _, metadata2, _ = parseIndependently (File.ReadAllBytes path)
    Assert.Equal("mlx", metadata2.["format"])
    // no tensors at all: a header with only the metadata, and no data
    write path [] Map.empty
    let _, metadata3, parsed3 = parseIndependently (File.ReadAllBytes path)
    Assert.Empty parsed3
    Assert.Equal("pt", metadata3.["format"])
    Assert.Empty(read path)

[<Fact>]
let ``a hand-built file is read with the right values, mapped when aligned and copied when not`` () =
    Native.ensureLoaded () |> ignore
    use dir = new TempDir "safetensors-handmade"

    let json =
        """{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]},"m":{"dtype":"BOOL","shape":[2],"data_offsets":[22,24]},"s":{"dtype":"I16","shape":[],"data_offsets":[24,26]},"e":{"dtype":"F64","shape":[0,4],"data_offsets":[26,26]}}"""

    let data =
        Array.concat
            [
                f32Bytes [| 1.0f; -2.5f; 3.25f; 1e-3f |]
                [| 0x80uy; 0x3Fuy; 0x00uy; 0xC0uy; 0xC0uy; 0x7Fuy |] // bf16 1.0, -2.0, NaN
                [| 1uy; 0uy |]
                [| 0xFEuy; 0xFFuy |] // int16 -2
            ]

    let check (path: string) (mapped: bool) =
        let header = readHeader path
        Assert.Equal<Map<string, string>>(Map.ofList [ "format", "pt" ], header.Metadata)

        let entry name =
            header.Entries |> List.find (fun e -> e.Name = name)

        let expected = if mapped then Mapped else Copied
        Assert.Equal(expected, loadPath MapWherePossible header (entry "w"))
        Assert.Equal(expected, loadPath MapWherePossible header (entry "b"))
        Assert.Equal(Copied, loadPath MapWherePossible header (entry "m"))
        Assert.Equal(Copied, loadPath MapWherePossible header (entry "e"))
        Assert.Equal(Copied, loadPath CopyAlways header (entry "w"))

        for mode in [ MapWherePossible; CopyAlways ] do
            withLoaded mode path (fun t ->
                Assert.Equal<float32[]>([| 1.0f; -2.5f; 3.25f; 1e-3f |], t.["w"].data<float32>().ToArray())
                Assert.Equal<int64[]>([| 2L; 2L |], t.["w"].shape)
                let b = t.["b"].to_type(torch.float32).data<float32>().ToArray()
                Assert.Equal(1.0f, b.[0])
                Assert.Equal(-2.0f, b.[1])
                Assert.True(Single.IsNaN b.[2])
                Assert.Equal<bool[]>([| true; false |], t.["m"].data<bool>().ToArray())
                Assert.Equal(-2s, t.["s"].item<int16>())
                Assert.Empty(t.["s"].shape)
                Assert.Equal<int64[]>([| 0L; 4L |], t.["e"].shape)
                Assert.Equal(torch.float64, t.["e"].dtype))

    // header padded to 8: the data starts at a multiple of 8, so F32 and BF16 map
    let aligned = dir.File "aligned.safetensors"
    File.WriteAllBytes(aligned, handMade json (padFor json) data)
    check aligned true
    // header padded to 8k + 1: every multi-byte tensor is misaligned and must be copied
    let unaligned = dir.File "unaligned.safetensors"
    File.WriteAllBytes(unaligned, handMade json ((padFor json + 1) % 8) data)
    check unaligned false

[<Fact>]
let ``selected tensors load in the order asked, and a missing name is named`` () =
    Native.ensureLoaded () |> ignore
    use dir = new TempDir "safetensors-select"
    use _scope = torch.NewDisposeScope()
    let rng = Random 11

    let a, b, c =
        sample rng F32 [| 4L |], sample rng F16 [| 2L; 3L |], sample rng I32 [| 5L |]

    let path = dir.File "sel.safetensors"
    write path [ "a", a; "b", b; "c", c ] Map.empty
    let loaded = load path [ "c"; "a"; "c" ]
    Assert.Equal<string list>([ "c"; "a" ], List.map fst loaded)
    assertSame "c" c (snd loaded.[0])
    assertSame "a" a (snd loaded.[1])

    raisesWith<Collections.Generic.KeyNotFoundException> [ path; "'zz'" ] (fun () -> load path [ "a"; "zz" ] |> ignore)
    |> ignore

[<Fact>]
let ``mapped tensors own their memory: no live tensor leaks and values survive GC and file deletion`` () =
    Native.ensureLoaded () |> ignore
    use dir = new TempDir "safetensors-owned"
    let rng = Random 5
    let path = dir.File "owned.safetensors"
    let a = sample rng F32 [| 33L; 7L |]
    let b = sample rng BF16 [| 9L |]
    let expectedA, expectedB = bytesOf a, bytesOf b
    write path [ "a", a; "b", b ] Map.empty
    a.Dispose()
    b.Dispose()
    let before = DisposeScopeManager.Statistics.ThreadTotalLiveCount

    do
        use _scope = torch.NewDisposeScope()
        let loaded = read path |> Map.ofList
        Assert.Equal(2L, DisposeScopeManager.Statistics.ThreadTotalLiveCount - before)
        File.Delete path // the map outlives the file's name

        for _ in 1..3 do
            GC.Collect()
            GC.WaitForPendingFinalizers()

        Assert.Equal<byte[]>(expectedA, bytesOf loaded.["a"])
        Assert.Equal<byte[]>(expectedB, bytesOf loaded.["b"])
        // writing to a mapped tensor is private to it
        loaded.["a"].fill_ 0.0 |> ignore

    Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount)

// ---------------------------------------------------------------------------------------------
// Malformed files.

/// Writes `bytes` as `name` in `dir`; asserts that reading the header and loading every tensor each
/// raise InvalidDataException mentioning the file and every fragment.
let private rejects (dir: TempDir) (name: string) (bytes: byte[]) (fragments: string list) =
    let path = dir.File name
    File.WriteAllBytes(path, bytes)

    let message =
        raisesWith<InvalidDataException> (path :: fragments) (fun () -> readHeader path |> ignore)

    for mode in [ MapWherePossible; CopyAlways ] do
        raisesWith<InvalidDataException> (path :: fragments) (fun () -> loadWith mode path None |> ignore)
        |> ignore

    message

/// A file with one header `json` (padded to 8) and `dataLength` zero bytes of data.
let private fileOf (json: string) (dataLength: int) =
    handMade json (padFor json) (Array.zeroCreate dataLength)

[<Fact>]
let ``a malformed header is reported with the file and the tensor`` () =
    Native.ensureLoaded () |> ignore
    use dir = new TempDir "safetensors-bad"

    let entry name dtype shape (b: int) (e: int) =
        $"\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape},\"data_offsets\":[{b},{e}]}}"

    let obj (entries: string list) = "{" + String.Join(",", entries) + "}"

    let cases: (string * byte[] * string list) list =
        [
            "short.safetensors", [| 1uy; 2uy; 3uy |], [ "fewer than the 8" ]
            "headerlen.safetensors",
            (let b = fileOf (obj [ entry "w" "F32" "[2]" 0 8 ]) 8
             BinaryPrimitives.WriteUInt64LittleEndian(Span(b, 0, 8), uint64 b.Length)
             b),
            [ "header length"; "past the end of the file" ]
            "notjson.safetensors",
            fileOf """{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]""" 8,
            [ "not valid JSON" ]
            "notobject.safetensors", fileOf """[1,2,3]   """ 0, [ "does not start with '{'" ]
            "unknown.safetensors", fileOf (obj [ entry "w" "F7" "[2]" 0 8 ]) 8, [ "'w'"; "unknown dtype 'F7'" ]
            "unsupported.safetensors", fileOf (obj [ entry "w" "U16" "[2]" 0 4 ]) 4, [ "'w'"; "'U16'"; "not support" ]
            "beyond.safetensors",
            fileOf (obj [ entry "a" "F32" "[2]" 0 8; entry "w" "F32" "[4]" 8 24 ]) 20,
            [ "'w'"; "past the end of the data"; "truncated" ]
            "overlap.safetensors",
            fileOf (obj [ entry "a" "F32" "[2]" 0 8; entry "w" "F32" "[2]" 4 12 ]) 12,
            [ "'w'"; "overlapping tensor 'a'" ]
            "mismatch.safetensors", fileOf (obj [ entry "w" "F16" "[3,2]" 0 8 ]) 8, [ "'w'"; "[3, 2]"; "needs 12" ]
            "reversed.safetensors", fileOf (obj [ entry "w" "U8" "[0]" 8 4 ]) 8, [ "'w'"; "end before they begin" ]
            "gap.safetensors",
            fileOf (obj [ entry "a" "F32" "[1]" 0 4; entry "w" "F32" "[1]" 8 12 ]) 12,
            [ "'w'"; "[4, 8)"; "belong to no tensor" ]
            "tail.safetensors", fileOf (obj [ entry "w" "F32" "[1]" 0 4 ]) 12, [ "[4, 12)"; "belong to no tensor" ]
            "negative.safetensors", fileOf (obj [ entry "w" "F32" "[-1]" 0 4 ]) 4, [ "'w'"; "'shape'" ]
            "noshape.safetensors", fileOf """{"w":{"dtype":"F32","data_offsets":[0,4]}}""" 4, [ "'w'"; "'shape'" ]
            "duplicate.safetensors",
            fileOf (obj [ entry "w" "U8" "[1]" 0 1; entry "w" "U8" "[1]" 1 2 ]) 2,
            [ "'w'"; "twice" ]
            "badmeta.safetensors",
            fileOf """{"__metadata__":{"format":1},"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}""" 1,
            [ "'format'"; "not a string" ]
        ]

    for name, bytes, fragments in cases do
        rejects dir name bytes fragments |> ignore

    // a BOOL byte other than 0 or 1 is found when loading
    let boolPath = dir.File "bool.safetensors"
    let json = obj [ entry "flags" "BOOL" "[3]" 0 3 ]
    File.WriteAllBytes(boolPath, handMade json (padFor json) [| 1uy; 0uy; 7uy |])

    raisesWith<InvalidDataException> [ boolPath; "'flags'"; "byte 7"; "element 2" ] (fun () -> read boolPath |> ignore)
    |> ignore

    raisesWith<FileNotFoundException> [ dir.File "absent.safetensors" ] (fun () ->
        read (dir.File "absent.safetensors") |> ignore)
    |> ignore

[<Fact>]
let ``a file cut at any byte is rejected naming the file`` () =
    Native.ensureLoaded () |> ignore
    use dir = new TempDir "safetensors-cut"
    use _scope = torch.NewDisposeScope()
    let rng = Random 9
    let full = dir.File "full.safetensors"
    write full [ "a", sample rng F32 [| 3L |]; "b", sample rng BF16 [| 5L |] ] Map.empty
    let bytes = File.ReadAllBytes full

    for cut in 0 .. bytes.Length - 1 do
        let path = dir.File "cut.safetensors"
        File.WriteAllBytes(path, bytes.[.. cut - 1])

        raisesWith<InvalidDataException> [ path ] (fun () -> read path |> ignore)
        |> ignore

// ---------------------------------------------------------------------------------------------
// Writer errors.

[<Fact>]
let ``bad writer input names the file and tensor and leaves nothing at the path`` () =
    Native.ensureLoaded () |> ignore
    use dir = new TempDir "safetensors-badwrite"
    use _scope = torch.NewDisposeScope()
    let good = torch.ones (3L)
    let disposed = torch.ones (2L)
    disposed.Dispose()
    let path = dir.File "out.safetensors"

    let cases =
        [
            [ "ok", good; "z", torch.zeros (2L, dtype = torch.complex64) ], [ "'z'"; "ComplexFloat32"; "not supported" ]
            [ "ok", good; "ok", good ], [ "'ok'"; "twice" ]
            [ "ok", good; "__metadata__", good ], [ "'__metadata__'"; "reserved" ]
            [ "ok", good; "gone", disposed ], [ "'gone'"; "disposed" ]
            [ "ok", good; "nothing", null ], [ "'nothing'"; "null" ]
        ]

    for tensors, fragments in cases do
        let message =
            raisesWith<ArgumentException> (path :: fragments) (fun () -> write path tensors Map.empty)

        Assert.Contains("tensors", message)
        Assert.False(File.Exists path, "nothing may be written at the path")
        Assert.Empty(Directory.GetFiles dir.Path)

    // an existing file is left as it was
    File.WriteAllText(path, "previous")

    raisesWith<ArgumentException> [ path; "'bad'" ] (fun () ->
        write path [ "bad", torch.zeros (1L, dtype = torch.complex128) ] Map.empty)
    |> ignore

    Assert.Equal("previous", File.ReadAllText path)
    Assert.Equal(1, Directory.GetFiles(dir.Path).Length)

    // a missing folder is an IOException naming the file, and creates nothing
    let nowhere = Path.Combine(dir.Path, "missing", "x.safetensors")

    raisesWith<IOException> [ nowhere ] (fun () -> write nowhere [ "ok", good ] Map.empty)
    |> ignore

    Assert.False(Directory.Exists(Path.GetDirectoryName nowhere))

// ---------------------------------------------------------------------------------------------
// Hugging Face folders.

/// A sharded folder: shard 1 holds a (F32) and b (BF16), shard 2 holds c (F16); the index maps them.
let private shardedFolder (dir: TempDir) (rng: Random) (weightMap: string) =
    let a, b, c =
        sample rng F32 [| 4L; 3L |], sample rng BF16 [| 6L |], sample rng F16 [| 2L; 5L |]

    write (dir.File "model-00001-of-00002.safetensors") [ "a", a; "b", b ] Map.empty
    write (dir.File "model-00002-of-00002.safetensors") [ "c", c ] Map.empty

    File.WriteAllText(
        dir.File SafeTensorsFolder.IndexFileName,
        $"""{{"metadata":{{"total_size":68}},"weight_map":{weightMap}}}"""
    )

    [ "a", a; "b", b; "c", c ]

let private standardMap =
    """{"a":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}"""

[<Fact>]
let ``a sharded folder loads every tensor from its shard`` () =
    Native.ensureLoaded () |> ignore
    use dir = new TempDir "safetensors-sharded"
    use _scope = torch.NewDisposeScope()
    let expected = shardedFolder dir (Random 21) standardMap

    match SafeTensorsFolder.find dir.Path with
    | SafeTensorsFolder.Sharded(index, shards) ->
        Assert.Equal(dir.File SafeTensorsFolder.IndexFileName, index)
        Assert.Equal(dir.File "model-00002-of-00002.safetensors", shards.["c"])
    | other -> failwith $"expected a sharded checkpoint, got %A{other}"

    let all = SafeTensorsFolder.loadAll dir.Path
    Assert.Equal<string list>([ "a"; "b"; "c" ], List.map fst all)

    for (name, t), (_, e) in List.zip all expected do
        assertSame name e t

    let some = SafeTensorsFolder.load dir.Path [ "c"; "a" ]
    Assert.Equal<string list>([ "c"; "a" ], List.map fst some)
    assertSame "c" (snd expected.[2]) (snd some.[0])

    // model.safetensors, when present, is the checkpoint
    write (dir.File SafeTensorsFolder.SingleFileName) [ "only", snd expected.[0] ] Map.empty

    Assert.Equal(
        SafeTensorsFolder.SingleFile(dir.File SafeTensorsFolder.SingleFileName),
        SafeTensorsFolder.find dir.Path
    )

    assertSame "only" (snd expected.[0]) (SafeTensorsFolder.load dir.Path [ "only" ] |> List.exactlyOne |> snd)

[<Fact>]
let ``a broken sharded folder names the index, the shard and the tensor`` () =
    Native.ensureLoaded () |> ignore
    use _scope = torch.NewDisposeScope()

    do // a shard the index names does not exist
        use dir = new TempDir "safetensors-missing-shard"
        shardedFolder dir (Random 1) standardMap |> ignore
        File.Delete(dir.File "model-00002-of-00002.safetensors")

        raisesWith<FileNotFoundException>
            [
                SafeTensorsFolder.IndexFileName
                "'c'"
                "model-00002-of-00002.safetensors"
                "does not exist"
            ]
            (fun () -> SafeTensorsFolder.loadAll dir.Path |> ignore)
        |> ignore

    do // the index names a tensor its shard lacks
        use dir = new TempDir "safetensors-lacking-shard"

        shardedFolder dir (Random 2) (standardMap.Replace("}", ""","d":"model-00002-of-00002.safetensors"}"""))
        |> ignore

        raisesWith<InvalidDataException>
            [
                SafeTensorsFolder.IndexFileName
                "'d'"
                "model-00002-of-00002.safetensors"
                "has no tensor"
            ]
            (fun () -> SafeTensorsFolder.load dir.Path [ "a"; "d" ] |> ignore)
        |> ignore

    do // a truncated shard
        use dir = new TempDir "safetensors-truncated-shard"
        shardedFolder dir (Random 3) standardMap |> ignore
        let shard = dir.File "model-00001-of-00002.safetensors"
        let bytes = File.ReadAllBytes shard
        File.WriteAllBytes(shard, bytes.[.. bytes.Length - 3])

        raisesWith<InvalidDataException> [ shard; "'b'"; "truncated" ] (fun () ->
            SafeTensorsFolder.loadAll dir.Path |> ignore)
        |> ignore

    do // a shard that fails while loading: the tensors already loaded from other shards are freed
        use dir = new TempDir "safetensors-failing-shard"
        write (dir.File "one.safetensors") [ "a", torch.ones (4L) ] Map.empty
        let json = """{"z":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}"""
        File.WriteAllBytes(dir.File "two.safetensors", handMade json (padFor json) [| 1uy; 7uy |])

        File.WriteAllText(
            dir.File SafeTensorsFolder.IndexFileName,
            """{"weight_map":{"a":"one.safetensors","z":"two.safetensors"}}"""
        )

        let before = DisposeScopeManager.Statistics.ThreadTotalLiveCount

        raisesWith<InvalidDataException> [ dir.File "two.safetensors"; "'z'"; "byte 7" ] (fun () ->
            SafeTensorsFolder.loadAll dir.Path |> ignore)
        |> ignore

        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount)

    do // a name the index lacks, an index pointing outside its folder, bad index JSON, an empty folder
        use dir = new TempDir "safetensors-bad-index"
        shardedFolder dir (Random 4) standardMap |> ignore

        raisesWith<Collections.Generic.KeyNotFoundException> [ SafeTensorsFolder.IndexFileName; "'zz'" ] (fun () ->
            SafeTensorsFolder.load dir.Path [ "zz" ] |> ignore)
        |> ignore

        File.WriteAllText(
            dir.File SafeTensorsFolder.IndexFileName,
            """{"weight_map":{"a":"../elsewhere.safetensors"}}"""
        )

        raisesWith<InvalidDataException>
            [ SafeTensorsFolder.IndexFileName; "'a'"; "not a file in the index's folder" ]
            (fun () -> SafeTensorsFolder.loadAll dir.Path |> ignore)
        |> ignore

        File.WriteAllText(dir.File SafeTensorsFolder.IndexFileName, """{"weight_map":{"a":""")

        raisesWith<InvalidDataException> [ SafeTensorsFolder.IndexFileName; "not valid JSON" ] (fun () ->
            SafeTensorsFolder.loadAll dir.Path |> ignore)
        |> ignore

        File.Delete(dir.File SafeTensorsFolder.IndexFileName)

        raisesWith<FileNotFoundException>
            [ dir.Path; SafeTensorsFolder.SingleFileName; SafeTensorsFolder.IndexFileName ]
            (fun () -> SafeTensorsFolder.find dir.Path |> ignore)
        |> ignore

// ---------------------------------------------------------------------------------------------
// Memory.

/// The process's resident set size in bytes from /proc/self/status, or None if unreadable.
let private residentBytes () : int64 option =
    try
        GC.Collect()
        GC.WaitForPendingFinalizers()
        GC.Collect()

        File.ReadAllLines "/proc/self/status"
        |> Array.tryFind (fun l -> l.StartsWith "VmRSS:")
        |> Option.map (fun l -> int64 (l.Substring(6).Trim().Split(' ').[0]) * 1024L)
    with _ ->
        None

[<Fact>]
let ``a mapped load of a 200 MB file does not copy it into memory, a copied one does`` () =
    Native.ensureLoaded () |> ignore

    match residentBytes () with
    | None -> eprintfn "skipped: /proc/self/status is not readable here"
    | Some _ ->
        use dir = new TempDir "safetensors-memory"
        let rows, cols = 50L, 1_048_576L // 50 × 2^20 float32 = 200 MiB
        let dataBytes = rows * cols * 4L

        let json =
            $"""{{"big":{{"dtype":"F32","shape":[{rows},{cols}],"data_offsets":[0,{dataBytes}]}}}}"""

        let header = handMade json (padFor json) [||]
        let path = dir.File "big.safetensors"

        do // a sparse file: the zeros cost no disk writes; two marked elements
            use f = new FileStream(path, FileMode.CreateNew)
            f.Write(header, 0, header.Length)
            f.SetLength(int64 header.Length + dataBytes)
            f.Write(f32Bytes [| 1.5f |], 0, 4)
            f.Seek(-4L, SeekOrigin.End) |> ignore
            f.Write(f32Bytes [| -2.5f |], 0, 4)

        let growth (mode: LoadMode) =
            let before = (residentBytes ()).Value
            let loaded = loadWith mode path None
            let big = snd loaded.Head
            Assert.Equal(1.5f, big.[0L, 0L].item<float32>())
            Assert.Equal(-2.5f, big.[rows - 1L, cols - 1L].item<float32>())
            Assert.Equal(0.0f, big.[rows / 2L, 7L].item<float32>())
            let after = (residentBytes ()).Value
            disposeAll loaded
            after - before

        let mapped = growth MapWherePossible
        let copied = growth CopyAlways
        let mib (b: int64) = float b / 1048576.0

        Assert.True(
            mapped < dataBytes / 8L,
            $"a mapped load grew RSS by {mib mapped:F1} MiB of a {mib dataBytes:F0} MiB file"
        )
        // the probe can see a copy: the same load copied grows RSS by about the file size
        Assert.True(copied > dataBytes / 2L, $"a copied load grew RSS by only {mib copied:F1} MiB")

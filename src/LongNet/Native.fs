/// Finds and loads libtorch and TorchSharp's native bridge before TorchSharp's own loader runs.
///
/// TorchSharp 0.107's `libLibTorchSharp.so` was linked against GCC 13's libstdc++ and names the version
/// node `GLIBCXX_3.4.32` for a single symbol that nothing binds. On systems whose libstdc++ is older
/// (Debian 12, Ubuntu 22.04) glibc refuses to load it. When, and only when, the process's libstdc++
/// lacks that node, this module writes a copy of the library with that one requirement marked weak
/// (`VER_FLG_WEAK` in its `Vernaux` entry) into a cache folder, beside links to libtorch, and loads it
/// by full path, so TorchSharp finds it already loaded. The NuGet cache is never modified.
///
/// GPU: set `LONGNET_TORCH_LIB` to the `torch/lib` folder of a CUDA build of PyTorch; its libtorch
/// (CUDA included) is loaded instead of the CPU package's.
module LongNet.Native

open System
open System.IO
open System.Runtime.InteropServices
open System.Text

/// The environment variable naming a libtorch folder (for example a CUDA PyTorch's `torch/lib`).
[<Literal>]
let TorchLibVariable = "LONGNET_TORCH_LIB"

/// The environment variable naming the folder that holds patched native copies (default: the user cache).
[<Literal>]
let CacheVariable = "LONGNET_NATIVE_CACHE"

/// The only version requirement known to be safe to weaken: GCC 13's iostream-initialisation anchor.
[<Literal>]
let WeakenableVersion = "GLIBCXX_3.4.32"

/// ELF64 dynamic-section parsing: just enough to read and weaken symbol-version requirements.
module Elf =
    let private shtGnuVerneed = 0x6ffffffeu
    let private verFlagWeak = 0x2us

    /// One version requirement (`Vernaux`) of a shared library: the file it is needed from, the
    /// version name, whether it is already weak, and the byte offset of its flags field.
    type VersionNeed =
        {
            File: string
            Version: string
            Weak: bool
            FlagsOffset: int
        }

    let private u16 (b: byte[]) (o: int) = BitConverter.ToUInt16(b, o)
    let private u32 (b: byte[]) (o: int) = BitConverter.ToUInt32(b, o)
    let private u64 (b: byte[]) (o: int) = BitConverter.ToUInt64(b, o)

    let private cString (b: byte[]) (o: int) =
        let e = Array.IndexOf(b, 0uy, o)
        Encoding.ASCII.GetString(b, o, (if e < 0 then b.Length else e) - o)

    /// Lists the symbol-version requirements of an ELF64 little-endian shared library image.
    let versionNeeds (image: byte[]) : Result<VersionNeed list, string> =
        let isElf64Le =
            image.Length >= 64
            && image.[0] = 0x7fuy
            && image.[1] = byte 'E'
            && image.[2] = byte 'L'
            && image.[3] = byte 'F'
            && image.[4] = 2uy
            && image.[5] = 1uy

        if not isElf64Le then
            Error "not an ELF64 little-endian file"
        else
            try
                let shoff = int (u64 image 0x28)
                let shentsize = int (u16 image 0x3A)
                let shnum = int (u16 image 0x3C)
                let section i = shoff + i * shentsize

                let verneed =
                    [ 0 .. shnum - 1 ]
                    |> List.tryFind (fun i -> u32 image (section i + 4) = shtGnuVerneed)

                match verneed with
                | None -> Ok []
                | Some i ->
                    let h = section i
                    let offset = int (u64 image (h + 0x18))
                    let count = int (u32 image (h + 0x2C))
                    let strtab = int (u64 image (section (int (u32 image (h + 0x28))) + 0x18))

                    let rec needs (entry: int) (left: int) acc =
                        if left = 0 then
                            acc
                        else
                            let file = cString image (strtab + int (u32 image (entry + 4)))
                            let auxCount = int (u16 image (entry + 2))

                            let rec auxes (aux: int) (n: int) acc =
                                if n = 0 then
                                    acc
                                else
                                    let need =
                                        {
                                            File = file
                                            Version = cString image (strtab + int (u32 image (aux + 8)))
                                            Weak = (u16 image (aux + 4) &&& verFlagWeak) <> 0us
                                            FlagsOffset = aux + 4
                                        }

                                    auxes (aux + int (u32 image (aux + 12))) (n - 1) (need :: acc)

                            let acc = auxes (entry + int (u32 image (entry + 8))) auxCount acc
                            needs (entry + int (u32 image (entry + 12))) (left - 1) acc

                    Ok(needs offset count [] |> List.rev)
            with e ->
                Error $"malformed ELF image: {e.Message}"

    /// Returns a copy of the image in which the named version requirements are marked weak.
    let weaken (versions: Set<string>) (image: byte[]) : Result<byte[], string> =
        versionNeeds image
        |> Result.map (fun needs ->
            let copy = Array.copy image

            for need in needs do
                if versions.Contains need.Version then
                    let flags = u16 copy need.FlagsOffset ||| verFlagWeak
                    BitConverter.GetBytes(flags).CopyTo(copy, need.FlagsOffset)

            copy)

/// The path of the libstdc++ loaded in this process, read from /proc/self/maps.
let private loadedLibStdCxxPath () =
    try
        File.ReadLines "/proc/self/maps"
        |> Seq.map (fun line -> line.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        |> Seq.tryPick (fun cols ->
            if cols.Length >= 6 && Path.GetFileName(cols.[5]).StartsWith "libstdc++.so" then
                Some cols.[5]
            else
                None)
    with _ ->
        None

/// True when the libstdc++ this process uses defines the given version node (for example `GLIBCXX_3.4.32`).
let libStdCxxDefines (version: string) : bool =
    let candidates =
        [
            yield! Option.toList (loadedLibStdCxxPath ())
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"
            "/usr/lib64/libstdc++.so.6"
            "/usr/lib/libstdc++.so.6"
        ]

    match candidates |> List.tryFind File.Exists with
    | None -> true // no system libstdc++ visible: nothing to fix here
    | Some path ->
        let needle = Encoding.ASCII.GetBytes(version + "\000")
        let bytes = File.ReadAllBytes path
        bytes.AsSpan().IndexOf(ReadOnlySpan needle) >= 0

let private nugetRoot () =
    match Environment.GetEnvironmentVariable "NUGET_PACKAGES" with
    | null
    | "" -> Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".nuget", "packages")
    | root -> root

let private nativeSearchDirectories () =
    match AppContext.GetData "NATIVE_DLL_SEARCH_DIRECTORIES" with
    | :? string as dirs ->
        dirs.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
        |> List.ofArray
    | _ -> []

let private torchSharpAssemblyDir () =
    let location = typeof<TorchSharp.torch.Tensor>.Assembly.Location

    if String.IsNullOrEmpty location then
        None
    else
        Some(Path.GetDirectoryName location)

/// Folders searched, in order, for a native library, from the most specific to the most general.
let private searchFolders (packageId: string) (version: string) =
    [
        yield! nativeSearchDirectories ()
        AppContext.BaseDirectory
        Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native")
        match torchSharpAssemblyDir () with
        | Some dir -> Path.GetFullPath(Path.Combine(dir, "..", "..", "runtimes", "linux-x64", "native"))
        | None -> ()
        Path.Combine(nugetRoot (), packageId, version, "runtimes", "linux-x64", "native")
    ]

let private findIn (folders: string list) (file: string) =
    folders |> List.map (fun d -> Path.Combine(d, file)) |> List.tryFind File.Exists

/// How the native libraries were brought in, for diagnostics (`longnet --version` prints it).
type LoadReport =
    {
        TorchLib: string option
        LibTorchSharp: string option
        Patched: bool
        Cuda: bool
    }

let private cacheRoot () =
    match Environment.GetEnvironmentVariable CacheVariable with
    | null
    | "" ->
        let xdg = Environment.GetEnvironmentVariable "XDG_CACHE_HOME"

        let baseDir =
            if String.IsNullOrEmpty xdg then
                Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".cache")
            else
                xdg

        Path.Combine(baseDir, "longnet", "native")
    | dir -> dir

/// Builds (once) a folder holding links to every library of `torchLib` and a weakened copy of
/// `libLibTorchSharp.so`, and returns the path of that copy.
let private preparePatchedCopy (torchLib: string) (libTorchSharp: string) : string =
    let original = File.ReadAllBytes libTorchSharp

    let patched =
        match Elf.weaken (set [ WeakenableVersion ]) original with
        | Ok bytes -> bytes
        | Error why -> failwith $"cannot read {libTorchSharp}: {why}"

    let key =
        let hash =
            Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(torchLib + "|" + libTorchSharp))

        let content = Security.Cryptography.SHA256.HashData original
        Convert.ToHexString(Array.append hash.[0..7] content.[0..7]).ToLowerInvariant()

    let folder = Path.Combine(cacheRoot (), key)
    let target = Path.Combine(folder, "libLibTorchSharp.so")

    if not (File.Exists target) then
        Directory.CreateDirectory folder |> ignore

        for lib in Directory.GetFiles torchLib do
            let name = Path.GetFileName lib

            if name.Contains ".so" && name <> "libLibTorchSharp.so" then
                let link = Path.Combine(folder, name)

                if not (File.Exists link) then
                    try
                        File.CreateSymbolicLink(link, lib) |> ignore
                    with :? IOException when File.Exists link ->
                        ()

        AtomicFile.writeBytes target patched

    target

let private missingStdCxxVersions (libTorchSharp: string) =
    match Elf.versionNeeds (File.ReadAllBytes libTorchSharp) with
    | Error _ -> []
    | Ok needs ->
        needs
        |> List.filter (fun n -> n.File.StartsWith "libstdc++" && not n.Weak)
        |> List.map _.Version
        |> List.distinct
        |> List.filter (libStdCxxDefines >> not)

let private load (path: string) = NativeLibrary.Load path |> ignore

let private cudaLibraries = [ "libc10_cuda.so"; "libtorch_cuda.so" ]

let private initialise () : LoadReport =
    if not (RuntimeInformation.IsOSPlatform OSPlatform.Linux) then
        {
            TorchLib = None
            LibTorchSharp = None
            Patched = false
            Cuda = false
        }
    else
        let userTorchLib =
            match Environment.GetEnvironmentVariable TorchLibVariable with
            | null
            | "" -> None
            | dir when File.Exists(Path.Combine(dir, "libtorch_cpu.so")) -> Some dir
            | dir ->
                invalidArg
                    TorchLibVariable
                    $"{TorchLibVariable}={dir} must name a folder holding libtorch_cpu.so (a PyTorch install's torch/lib)."

        let torchLib =
            match userTorchLib with
            | Some dir -> Some dir
            | None ->
                findIn (searchFolders "libtorch-cpu-linux-x64" "2.10.0") "libtorch_cpu.so"
                |> Option.map Path.GetDirectoryName

        let libTorchSharp =
            findIn (searchFolders "torchsharp" "0.107.0") "libLibTorchSharp.so"

        match torchLib, libTorchSharp with
        | Some torchLib, Some bridge ->
            let missing = missingStdCxxVersions bridge
            let unknown = missing |> List.filter ((<>) WeakenableVersion)

            if not unknown.IsEmpty then
                failwith (
                    $"{bridge} needs libstdc++ versions {String.Join(',', unknown)}, which this system lacks; "
                    + "install a newer libstdc++ (GCC 13 or later)."
                )

            let needsPatch = not missing.IsEmpty

            let cuda =
                cudaLibraries |> List.forall (fun l -> File.Exists(Path.Combine(torchLib, l)))

            if needsPatch || userTorchLib.IsSome then
                // Load libtorch by full path first, so the bridge's dependencies resolve to this copy.
                for lib in
                    [ "libc10.so"; "libtorch_cpu.so" ]
                    @ (if cuda then cudaLibraries else [])
                    @ [ "libtorch.so" ] do
                    let path = Path.Combine(torchLib, lib)

                    if File.Exists path then
                        load path

                let bridgePath =
                    if needsPatch then
                        preparePatchedCopy torchLib bridge
                    else
                        bridge

                load bridgePath

                {
                    TorchLib = Some torchLib
                    LibTorchSharp = Some bridgePath
                    Patched = needsPatch
                    Cuda = cuda
                }
            else
                {
                    TorchLib = Some torchLib
                    LibTorchSharp = Some bridge
                    Patched = false
                    Cuda = false
                }
        | _ ->
            // Nothing found: leave the search to TorchSharp's own loader, which reports what is missing.
            {
                TorchLib = torchLib
                LibTorchSharp = libTorchSharp
                Patched = false
                Cuda = false
            }

let private loaded = lazy (initialise ())

/// Loads libtorch and TorchSharp's native bridge (patched if this system needs it); safe to call often.
/// Call it before the first use of `torch` in a program or script; every LongNet entry point calls it.
let ensureLoaded () : LoadReport = loaded.Force()

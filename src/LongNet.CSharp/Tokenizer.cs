using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using FsITokenizer = global::LongNet.Text.ITokenizer;
using FsTokenizer = global::LongNet.Text.Tokenizer;

namespace LongNet.CSharp;

/// <summary>
/// Turns text into token ids and back: byte-level (every UTF-8 byte a token, 259 ids) or byte-pair
/// encoding from <c>vocab.json</c> and <c>merges.txt</c> files. Immutable; holds no native memory.
/// </summary>
public sealed class Tokenizer
{
    internal Tokenizer(FsITokenizer inner, string? vocabPath = null, string? mergesPath = null)
    {
        Inner = inner;
        VocabPath = vocabPath;
        MergesPath = mergesPath;
    }

    internal FsITokenizer Inner { get; }

    internal string? VocabPath { get; }

    internal string? MergesPath { get; }

    /// <summary>The byte-level tokenizer: ids 0 … 255 are UTF-8 bytes, 256 &lt;bos&gt;, 257 &lt;eos&gt;, 258 &lt;pad&gt;.</summary>
    /// <returns>The tokenizer.</returns>
    public static Tokenizer ByteLevel() => new(FsTokenizer.byteLevel());

    /// <summary>A byte-pair-encoding tokenizer read from a <c>vocab.json</c> and a <c>merges.txt</c> file (GPT-2 format).</summary>
    /// <param name="vocabPath">The vocabulary file.</param>
    /// <param name="mergesPath">The merges file.</param>
    /// <returns>The tokenizer.</returns>
    /// <exception cref="ArgumentException">A path is null or empty.</exception>
    /// <exception cref="FileNotFoundException">A file does not exist.</exception>
    /// <exception cref="InvalidDataException">The files do not describe a BPE tokenizer.</exception>
    public static Tokenizer FromBpeFiles(string vocabPath, string mergesPath)
    {
        Checks.NotBlank(vocabPath, nameof(vocabPath));
        Checks.NotBlank(mergesPath, nameof(mergesPath));
        foreach (var path in new[] { vocabPath, mergesPath })
        {
            if (!File.Exists(path))
            {
                throw new FileNotFoundException($"tokenizer file '{path}' does not exist.", path);
            }
        }

        var created = FsTokenizer.bpeFromFiles(vocabPath, mergesPath);
        if (created.IsError)
        {
            throw new InvalidDataException(created.ErrorValue);
        }

        return new Tokenizer(created.ResultValue, Path.GetFullPath(vocabPath), Path.GetFullPath(mergesPath));
    }

    /// <summary>A short description, e.g. <c>byte-level (259 ids: …)</c>.</summary>
    public string Name => Inner.Name;

    /// <summary>The number of ids; every id is in [0, VocabularySize).</summary>
    public int VocabularySize => Inner.VocabSize;

    /// <summary>The id that separates documents and ends generation, or null where the vocabulary has none.</summary>
    public int? EndOfText => Interop.ToNullable(Inner.EndOfText);

    /// <summary>The token ids of a text.</summary>
    /// <param name="text">Any text.</param>
    /// <returns>A new array of ids.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="text"/> is null.</exception>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return Inner.Encode(text);
    }

    /// <summary>The text of token ids (special ids are skipped; invalid UTF-8 becomes U+FFFD).</summary>
    /// <param name="ids">Token ids, each in [0, <see cref="VocabularySize"/>).</param>
    /// <returns>The text.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="ids"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An id is outside the vocabulary.</exception>
    public string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var array = ids.ToArray();
        foreach (var id in array)
        {
            if (id < 0 || id >= VocabularySize)
            {
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"ids must be in [0, {VocabularySize}), got {id}.");
            }
        }

        return Inner.Decode(array);
    }

    /// <summary>The tokenizer's <see cref="Name"/>.</summary>
    /// <returns>The description.</returns>
    public override string ToString() => Name;
}

using System;
using System.Collections.Generic;
using System.Linq;
using System.Reflection;
using Xunit;

namespace LongNet.CSharp.Tests;

/// <summary>
/// The facade's public surface: no F# type anywhere a C# caller can see it (Plotly.NET.CSharp's rule),
/// everything in one namespace, and every class sealed or static.
/// </summary>
public sealed class PublicApiTests
{
    private static readonly Assembly Facade = typeof(DilatedAttention).Assembly;

    /// <summary>
    /// Whether a type is, or is built from, an F# type: defined in FSharp.Core (lists, options, tuples
    /// of F# functions, results, units…) or in the F# core assembly LongNet.
    /// </summary>
    private static bool IsFSharp(Type type)
    {
        if (type.IsGenericParameter)
        {
            return type.GetGenericParameterConstraints().Any(IsFSharp);
        }

        if (type.HasElementType)
        {
            return IsFSharp(type.GetElementType()!);
        }

        var assembly = type.Assembly.GetName().Name;
        if (assembly is "FSharp.Core" or "LongNet")
        {
            return true;
        }

        return type.IsGenericType && !type.IsGenericTypeDefinition && type.GetGenericArguments().Any(IsFSharp);
    }

    private static bool Visible(MethodBase? m) => m is not null && (m.IsPublic || m.IsFamily || m.IsFamilyOrAssembly);

    private static bool Visible(FieldInfo f) => f.IsPublic || f.IsFamily || f.IsFamilyOrAssembly;

    /// <summary>Every place an F# type appears in the public (or protected) surface of an assembly.</summary>
    public static IEnumerable<string> Leaks(Assembly assembly)
    {
        const BindingFlags all = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;

        foreach (var type in assembly.GetExportedTypes())
        {
            if (type.BaseType is { } baseType && IsFSharp(baseType))
            {
                yield return $"{type}: base type {baseType}";
            }

            foreach (var i in type.GetInterfaces().Where(IsFSharp))
            {
                yield return $"{type}: interface {i}";
            }

            foreach (var g in type.GetGenericArguments().Where(IsFSharp))
            {
                yield return $"{type}: generic parameter {g}";
            }

            foreach (var member in type.GetMembers(all))
            {
                var leaks = member switch
                {
                    MethodInfo m when Visible(m) =>
                        m.GetParameters().Select(p => p.ParameterType)
                            .Append(m.ReturnType)
                            .Concat(m.GetGenericArguments()),
                    ConstructorInfo c when Visible(c) => c.GetParameters().Select(p => p.ParameterType),
                    PropertyInfo p when Visible(p.GetMethod) || Visible(p.SetMethod) =>
                        p.GetIndexParameters().Select(i => i.ParameterType).Append(p.PropertyType),
                    FieldInfo f when Visible(f) => [f.FieldType],
                    EventInfo e when Visible(e.AddMethod) => [e.EventHandlerType!],
                    _ => Enumerable.Empty<Type>(),
                };

                foreach (var leak in leaks.Where(IsFSharp))
                {
                    yield return $"{type}.{member.Name}: {leak}";
                }
            }
        }
    }

    [Fact]
    public void No_FSharp_type_appears_in_any_public_signature_of_the_facade()
    {
        var leaks = Leaks(Facade).ToList();
        Assert.True(leaks.Count == 0, "F# types in the public surface:\n" + string.Join("\n", leaks));
    }

    [Fact]
    public void The_leak_check_finds_FSharp_types_where_they_are()
    {
        // The F# core itself is full of F# types; the check must see them there.
        var leaks = Leaks(typeof(global::LongNet.DilatedConfig).Assembly).ToList();
        Assert.Contains(leaks, l => l.Contains("FSharpList", StringComparison.Ordinal));
        Assert.Contains(leaks, l => l.Contains("FSharpOption", StringComparison.Ordinal));
        Assert.True(IsFSharp(typeof(Microsoft.FSharp.Collections.FSharpList<int>[])));
        Assert.True(IsFSharp(typeof(Dictionary<string, Microsoft.FSharp.Core.FSharpOption<int>>)));
        Assert.True(IsFSharp(typeof(Func<Microsoft.FSharp.Core.Unit>)));
        Assert.False(IsFSharp(typeof(IReadOnlyList<int>)));
        Assert.False(IsFSharp(typeof(TorchSharp.torch.Tensor)));
    }

    [Fact]
    public void The_facade_has_public_types_in_the_LongNet_CSharp_namespace_only()
    {
        var types = Facade.GetExportedTypes();
        Assert.NotEmpty(types);
        Assert.All(types, t => Assert.Equal("LongNet.CSharp", t.Namespace));
    }

    [Fact]
    public void Every_public_class_is_sealed_or_static_and_no_constructor_is_public()
    {
        foreach (var type in Facade.GetExportedTypes().Where(t => t.IsClass))
        {
            Assert.True(type.IsSealed, $"{type} should be sealed (or static)");
            Assert.Empty(type.GetConstructors(BindingFlags.Public | BindingFlags.Instance));
        }
    }

    [Fact]
    public void The_facade_offers_the_documented_entry_points()
    {
        string[] expected =
        [
            nameof(DilatedAttention), nameof(DilatedAttentionBuilder), nameof(AttentionResult), nameof(DilatedGroup),
            nameof(AttentionPlan), nameof(GroupPlan), nameof(Connectivity), nameof(HeadOffsets), nameof(AttentionKernel),
            nameof(LongNetRuntime), nameof(NativeLoadInfo), nameof(Npy), nameof(NpyArray), nameof(NpyElementType),
            nameof(AttentionLayout), nameof(MultiheadDilatedAttention), nameof(MultiheadDilatedAttentionBuilder),
            nameof(LongNetModel), nameof(LongNetModelBuilder), nameof(Tokenizer), nameof(Trainer), nameof(TrainerBuilder),
            nameof(TrainingProgress), nameof(TrainingResult), nameof(TextGenerator), nameof(TextGeneratorBuilder),
            nameof(GenerationResult), nameof(PasskeyEvaluation), nameof(PasskeyEvaluationBuilder), nameof(PasskeyCell),
            nameof(PasskeyResult), nameof(Benchmark), nameof(BenchmarkBuilder), nameof(BenchmarkCell), nameof(BenchmarkSkip),
            nameof(BenchmarkMachine), nameof(BenchmarkResult), nameof(FeedForwardKind), nameof(PositionEncoding),
            nameof(Preset), nameof(TrainingPrecision), nameof(TrainingTask), nameof(BenchmarkMode),
        ];
        Assert.Subset(Facade.GetExportedTypes().Select(t => t.Name).ToHashSet(), expected.ToHashSet());
        foreach (var owner in new[] { typeof(AttentionResult), typeof(MultiheadDilatedAttention), typeof(LongNetModel), typeof(TrainingResult) })
        {
            Assert.True(typeof(IDisposable).IsAssignableFrom(owner), $"{owner} holds native memory and should be IDisposable");
        }
    }

    [Fact]
    public void Every_public_member_of_the_facade_has_an_XML_doc_comment()
    {
        var xml = System.IO.Path.ChangeExtension(Facade.Location, ".xml");
        Assert.True(System.IO.File.Exists(xml), $"{xml} should be generated");
        var documented = System.Xml.Linq.XDocument.Load(xml).Descendants("member")
            .Where(m => m.Element("summary") is { } s && s.Value.Trim().Length > 0)
            .Select(m => (string)m.Attribute("name")!)
            .ToHashSet();

        foreach (var type in Facade.GetExportedTypes())
        {
            Assert.Contains("T:" + type.FullName, documented);
            const BindingFlags declared = BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
            foreach (var p in type.GetProperties(declared))
            {
                Assert.True(documented.Contains($"P:{type.FullName}.{p.Name}"), $"{type.Name}.{p.Name} has no summary");
            }

            foreach (var m in type.GetMethods(declared).Where(m => !m.IsSpecialName && m.DeclaringType == type && !m.Name.StartsWith('<')))
            {
                if (type.IsEnum || m.IsDefined(typeof(System.Runtime.CompilerServices.CompilerGeneratedAttribute)))
                {
                    continue;
                }

                Assert.True(documented.Any(d => d.StartsWith($"M:{type.FullName}.{m.Name}", StringComparison.Ordinal)), $"{type.Name}.{m.Name} has no summary");
            }
        }
    }
}

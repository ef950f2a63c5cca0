from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("uploads", "0009_stewards"),
    ]

    operations = [
        migrations.CreateModel(
            name="ResourceLease",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("resource_id", models.CharField(max_length=100, unique=True)),
                ("holder", models.UUIDField(blank=True, null=True)),
                (
                    "upload_id",
                    models.UUIDField(blank=True, help_text="The upload being linked by the holder", null=True),
                ),
                ("expires_at", models.DateTimeField(blank=True, null=True)),
                ("fence", models.PositiveBigIntegerField(default=0)),
                ("repatch", models.BooleanField(default=False)),
            ],
        ),
    ]

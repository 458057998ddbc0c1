package org.hearth.demo

import androidx.compose.foundation.clickable
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Spacer
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.height
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.width
import androidx.compose.foundation.lazy.LazyRow
import androidx.compose.foundation.lazy.items
import androidx.compose.material3.Card
import androidx.compose.material3.LinearProgressIndicator
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.ui.Modifier
import androidx.compose.ui.text.style.TextOverflow
import androidx.compose.ui.unit.dp
import org.hearth.demo.model.Tile

/** The home screen: one row ranked on the device, the reason under each item. */
@Composable
fun HomeScreen(state: UiState, onOpen: (String) -> Unit) {
    Column(Modifier.fillMaxSize().padding(16.dp)) {
        val row = state.home
        Text(if (row == null || row.personalized) "For you" else "Popular", style = MaterialTheme.typography.headlineSmall)
        // A row that is not personalized says so, and why.
        row?.notPersonalizedLabel?.let {
            Text(it, style = MaterialTheme.typography.labelMedium, color = MaterialTheme.colorScheme.error)
        }
        Spacer(Modifier.height(12.dp))
        if (state.loading && row == null) LinearProgressIndicator()
        state.error?.let { Text(it, color = MaterialTheme.colorScheme.error) }
        LazyRow(horizontalArrangement = Arrangement.spacedBy(12.dp)) {
            items(row?.tiles.orEmpty(), key = { it.itemId }) { tile -> TileCard(tile, onClick = { onOpen(tile.itemId) }) }
        }
        Spacer(Modifier.height(12.dp))
        Text(
            "Ranked on this device from your viewing here; nothing you watch leaves it. Open a title to record a play.",
            style = MaterialTheme.typography.bodySmall,
        )
    }
}

@Composable
private fun TileCard(tile: Tile, onClick: () -> Unit) {
    Card(Modifier.width(168.dp).clickable(onClick = onClick)) {
        Column(Modifier.padding(12.dp)) {
            Text(tile.title, style = MaterialTheme.typography.titleMedium, maxLines = 2, overflow = TextOverflow.Ellipsis)
            Spacer(Modifier.height(8.dp))
            Text(tile.reason, style = MaterialTheme.typography.bodySmall, color = MaterialTheme.colorScheme.onSurfaceVariant)
        }
    }
}
